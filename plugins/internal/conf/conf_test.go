package conf

import (
	"errors"
	"testing"
	"time"

	"github.com/callagent/agent/sink"
)

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{`"10s"`, 10 * time.Second, false},
		{`"1m30s"`, 90 * time.Second, false},
		{`2.5`, 2500 * time.Millisecond, false},
		{`"soon"`, 0, true},
		{`true`, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var c struct {
				Timeout Duration `json:"timeout"`
			}
			err := Decode([]byte(`{"timeout":`+tt.in+`}`), &c)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, sink.ErrConfig) {
				t.Errorf("err %v does not wrap ErrConfig", err)
			}
			if time.Duration(c.Timeout) != tt.want {
				t.Errorf("got %v, want %v", time.Duration(c.Timeout), tt.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	var c struct {
		Path string `json:"path"`
	}
	if err := Decode(nil, &c); err != nil {
		t.Errorf("empty section: %v", err)
	}
	if err := Decode([]byte(`{"paht":"x"}`), &c); !errors.Is(err, sink.ErrConfig) || err.Error() != `invalid sink config: json: unknown field "paht"` {
		t.Errorf("unknown key: %v", err)
	}
	if got := Duration(0).Or(time.Second); got != time.Second {
		t.Errorf("Or = %v", got)
	}
}
