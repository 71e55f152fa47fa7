package telegram

import (
	"strings"
	"testing"

	"github.com/callagent/agent/plugins/internal/render"
)

func TestMarkup(t *testing.T) {
	tests := []struct {
		mode, in string
		bold     bool
		want     string
	}{
		{ParseNone, "a <b> & *c*", true, "a <b> & *c*"},
		{ParseHTML, "503 <Service> & co", false, "503 &lt;Service&gt; &amp; co"},
		{ParseHTML, "title", true, "<b>title</b>"},
		{ParseMarkdownV2, "rate 50.5% (x-y) [z] !", false, `rate 50\.5% \(x\-y\) \[z\] \!`},
		{ParseMarkdownV2, "a_b*c", true, `*a\_b\*c*`},
		{ParseMarkdown, "a_b*c`d[e].", false, "a\\_b\\*c\\`d\\[e]."},
	}
	for _, tt := range tests {
		t.Run(tt.mode+" "+tt.in, func(t *testing.T) {
			if got := markup(tt.in, tt.bold, tt.mode); got != tt.want {
				t.Errorf("markup = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPack(t *testing.T) {
	long := strings.Repeat("😀", 3000) // 6000 UTF-16 units on one line
	tests := []struct {
		name  string
		texts []render.Text
		// want is the plain length of each message.
		want []int
	}{
		{"two short texts share a message", []render.Text{{Title: "a", Lines: []string{"bb"}}, {Title: "c"}},
			[]int{len("a\nbb\n\nc")}},
		{"long line fills the first message, then the next", []render.Text{{Title: "t", Lines: []string{long}}},
			[]int{4096, 6000 - (4096 - 2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs := pack(tt.texts, ParseNone)
			if len(msgs) != len(tt.want) {
				t.Fatalf("%d messages, want %d", len(msgs), len(tt.want))
			}
			for i, m := range msgs {
				if n := length(m.text); n != tt.want[i] {
					t.Errorf("message %d: length %d, want %d", i, n, tt.want[i])
				}
			}
		})
	}
}
