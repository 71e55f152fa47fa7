package simulator

import (
	"fmt"
	"testing"
)

// TestCRMSearchIndex checks the search's EQ index against what a full scan
// finds: after updates, across filter groups, in creation order.
func TestCRMSearchIndex(t *testing.T) {
	s := start(t, "", nil)
	ids := map[string]string{}
	for _, call := range []string{"a", "b", "c"} {
		r := crmCreateReq(call).do(t, s, nil)
		if r.status != 201 {
			t.Fatalf("create %s: %d %s", call, r.status, r.body)
		}
		ids[call], _ = r.json(t)["id"].(string)
	}
	// b ends busy: its status leaves COMPLETED for BUSY.
	patch := req{method: "PATCH", path: "/crm/v3/objects/calls/" + ids["b"],
		header: map[string]string{"Authorization": "Bearer pat-test", "Content-Type": "application/json"},
		body:   `{"properties":{"hs_call_status":"BUSY"}}`}
	if r := patch.do(t, s, nil); r.status != 200 {
		t.Fatalf("update: %d %s", r.status, r.body)
	}

	eq := func(prop, value string) any {
		return map[string]any{"filters": []any{map[string]string{"propertyName": prop, "operator": "EQ", "value": value}}}
	}
	tests := []struct {
		name   string
		groups []any
		want   []string // calls, in the order found
	}{
		{"one EQ", []any{eq("agent_call_id", "c")}, []string{"c"}},
		{"old value no longer matches", []any{eq("hs_call_status", "COMPLETED")}, []string{"a", "c"}},
		{"new value matches", []any{eq("hs_call_status", "BUSY")}, []string{"b"}},
		{"groups are ORed, creation order kept", []any{eq("agent_call_id", "c"), eq("agent_call_id", "a")}, []string{"a", "c"}},
		{"EQ and another filter", []any{map[string]any{"filters": []any{
			map[string]string{"propertyName": "hs_call_status", "operator": "EQ", "value": "COMPLETED"},
			map[string]string{"propertyName": "agent_call_id", "operator": "NEQ", "value": "a"},
		}}}, []string{"c"}},
		{"no EQ scans", []any{map[string]any{"filters": []any{
			map[string]string{"propertyName": "agent_call_id", "operator": "NEQ", "value": "a"},
		}}}, []string{"b", "c"}},
		{"no value held", []any{eq("agent_call_id", "z")}, nil},
		{"no filters", nil, []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := crmSearchReq("")
			q.body = jsonBody(map[string]any{"filterGroups": tt.groups})
			m := q.do(t, s, nil).json(t)
			results, _ := m["results"].([]any)
			var got []string
			for _, r := range results {
				for call, id := range ids {
					if dig(r, "id") == id {
						got = append(got, call)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || m["total"] != float64(len(tt.want)) {
				t.Errorf("found %v (total %v), want %v", got, m["total"], tt.want)
			}
		})
	}
}
