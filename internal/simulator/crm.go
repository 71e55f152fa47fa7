package simulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// crmStore holds the CRM's call records.
type crmStore struct {
	next  int
	byID  map[string]*crmRecord
	order []string
	// byValue indexes the records by property and value, so that a search
	// with an EQ filter (the client's lookup by call id, once per call) reads
	// the records holding that value rather than every record: a scan made
	// a long load test quadratic.
	byValue map[string]map[string][]*crmRecord
}

// index adds rec under its property k with value v.
func (st *crmStore) index(rec *crmRecord, k, v string) {
	if st.byValue == nil {
		st.byValue = map[string]map[string][]*crmRecord{}
	}
	if st.byValue[k] == nil {
		st.byValue[k] = map[string][]*crmRecord{}
	}
	st.byValue[k][v] = append(st.byValue[k][v], rec)
}

// set changes a property of rec, keeping the index.
func (st *crmStore) set(rec *crmRecord, k, v string) {
	if old, ok := rec.Properties[k]; ok {
		list := st.byValue[k][old]
		if i := slices.Index(list, rec); i >= 0 {
			list = slices.Delete(list, i, i+1)
		}
		if len(list) == 0 {
			delete(st.byValue[k], old)
		} else {
			st.byValue[k][old] = list
		}
	}
	rec.Properties[k] = v
	st.index(rec, k, v)
}

// candidates returns, in creation order, the records a search may match:
// when every filter group has an EQ filter, only those holding its value.
func (st *crmStore) candidates(groups [][]crmFilter) []*crmRecord {
	picked := map[*crmRecord]bool{}
	for _, g := range groups {
		i := slices.IndexFunc(g, func(f crmFilter) bool { return f.Operator == "EQ" })
		if i < 0 {
			return st.all()
		}
		for _, rec := range st.byValue[g[i].PropertyName][g[i].str(g[i].Value)] {
			picked[rec] = true
		}
	}
	if len(groups) == 0 {
		return st.all()
	}
	out := slices.Collect(maps.Keys(picked))
	slices.SortFunc(out, func(a, b *crmRecord) int { return a.seq - b.seq })
	return out
}

func (st *crmStore) all() []*crmRecord {
	out := make([]*crmRecord, 0, len(st.order))
	for _, id := range st.order {
		out = append(out, st.byID[id])
	}
	return out
}

type crmRecord struct {
	seq          int // creation order
	ID           string
	Properties   map[string]string
	Associations json.RawMessage
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

func (rec *crmRecord) json(props []string) map[string]any {
	p := maps.Clone(rec.Properties)
	if len(props) > 0 {
		p = map[string]string{}
		for _, k := range slices.Concat(props, []string{"hs_object_id", "hs_createdate", "hs_lastmodifieddate"}) {
			if v, ok := rec.Properties[k]; ok {
				p[k] = v
			}
		}
	}
	return map[string]any{
		"id":         rec.ID,
		"properties": p,
		"createdAt":  rec.CreatedAt.UTC().Format(time.RFC3339Nano),
		"updatedAt":  rec.UpdatedAt.UTC().Format(time.RFC3339Nano),
		"archived":   false,
	}
}

// HubSpot enumerations the simulator checks, as HubSpot rejects other values.
var (
	callDirections = []string{"INBOUND", "OUTBOUND"}
	callStatuses   = []string{"BUSY", "CALLING_CRM_USER", "CANCELED", "COMPLETED", "CONNECTING", "FAILED", "IN_PROGRESS", "NO_ANSWER", "QUEUED", "RINGING"}
)

func (s *Server) crmFail(w http.ResponseWriter, status int, category, msg string) {
	writeError(w, ServiceCRM, apiError{Status: status, Code: category, Message: msg}, s.now())
}

func (s *Server) crmAuth(w http.ResponseWriter, r *http.Request) bool {
	if !s.authorized(ServiceCRM, bearer(r)) {
		s.crmFail(w, http.StatusUnauthorized, "INVALID_AUTHENTICATION",
			"Authentication credentials not found. This API supports OAuth 2.0 authentication and private app tokens.")
		return false
	}
	return true
}

// stringProps converts property values to the strings HubSpot stores.
func stringProps(in map[string]json.RawMessage) (map[string]string, error) {
	out := make(map[string]string, len(in))
	for k, raw := range in {
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		switch v := v.(type) {
		case nil:
			out[k] = ""
		case string:
			out[k] = v
		case json.Number:
			out[k] = v.String()
		case bool:
			out[k] = strconv.FormatBool(v)
		default:
			return nil, fmt.Errorf("property %s: a %T is not a property value", k, v)
		}
	}
	return out, nil
}

func validateCallProps(p map[string]string, creating bool) string {
	ts, ok := p["hs_timestamp"]
	if creating && (!ok || ts == "") {
		return `Property values were not valid: [{"isValid":false,"message":"hs_timestamp is required","error":"REQUIRED_FIELD","name":"hs_timestamp"}]`
	}
	if ok {
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
				return fmt.Sprintf(`Property values were not valid: [{"isValid":false,"message":"%s was not a valid long or ISO 8601 timestamp.","error":"INVALID_DATE","name":"hs_timestamp"}]`, ts)
			}
		}
	}
	for _, c := range []struct {
		name    string
		allowed []string
	}{{"hs_call_direction", callDirections}, {"hs_call_status", callStatuses}} {
		if v, ok := p[c.name]; ok && v != "" && !slices.Contains(c.allowed, v) {
			return fmt.Sprintf(`Property values were not valid: [{"isValid":false,"message":"%s was not one of the allowed options: %s","error":"INVALID_OPTION","name":"%s"}]`,
				v, strings.Join(c.allowed, ", "), c.name)
		}
	}
	if d, ok := p["hs_call_duration"]; ok && d != "" {
		if _, err := strconv.ParseInt(d, 10, 64); err != nil {
			return fmt.Sprintf(`Property values were not valid: [{"isValid":false,"message":"%s was not a valid number (milliseconds).","error":"INVALID_LONG","name":"hs_call_duration"}]`, d)
		}
	}
	return ""
}

func (s *Server) crmCreate(w http.ResponseWriter, r *http.Request) {
	if !s.crmAuth(w, r) {
		return
	}
	var req struct {
		Properties   map[string]json.RawMessage `json:"properties"`
		Associations json.RawMessage            `json:"associations"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: "+err.Error())
		return
	}
	props, err := stringProps(req.Properties)
	if err != nil {
		s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: "+err.Error())
		return
	}
	if msg := validateCallProps(props, true); msg != "" {
		s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR", msg)
		return
	}
	if len(req.Associations) > 0 {
		var assoc []json.RawMessage
		if json.Unmarshal(req.Associations, &assoc) != nil {
			s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR", "associations: must be an array")
			return
		}
	}

	now := s.now()
	s.mu.Lock()
	if up := s.sc.Services[ServiceCRM].UniqueProperty; up != "" && props[up] != "" {
		for _, id := range s.crm.order {
			if s.crm.byID[id].Properties[up] == props[up] {
				s.mu.Unlock()
				s.crmFail(w, http.StatusConflict, "CONFLICT",
					fmt.Sprintf("A call with %s=%s already exists. Existing ID: %s", up, props[up], id))
				return
			}
		}
	}
	s.crm.next++
	id := strconv.Itoa(51_000_000_000 + s.crm.next)
	stamp := now.UTC().Format(time.RFC3339Nano)
	props["hs_object_id"], props["hs_createdate"], props["hs_lastmodifieddate"] = id, stamp, stamp
	rec := &crmRecord{seq: s.crm.next, ID: id, Properties: props, Associations: req.Associations, CreatedAt: now, UpdatedAt: now}
	s.crm.byID[id] = rec
	s.crm.order = append(s.crm.order, id)
	for k, v := range props {
		s.crm.index(rec, k, v)
	}
	out := rec.json(nil)
	s.mu.Unlock()

	callID := r.Header.Get(HeaderCallID)
	if callID == "" {
		callID = props["agent_call_id"]
	}
	s.sideEffect(ServiceCRM, callID)
	writeJSON(w, http.StatusCreated, out)
}

type crmFilter struct {
	PropertyName string `json:"propertyName"`
	Operator     string `json:"operator"`
	Value        any    `json:"value"`
	Values       []any  `json:"values"`
}

func (crmFilter) str(x any) string {
	if x == nil {
		return ""
	}
	return fmt.Sprint(x)
}

func (f crmFilter) match(p map[string]string) bool {
	v, has := p[f.PropertyName]
	str := f.str
	switch f.Operator {
	case "EQ":
		return has && v == str(f.Value)
	case "NEQ":
		return v != str(f.Value)
	case "HAS_PROPERTY":
		return has && v != ""
	case "NOT_HAS_PROPERTY":
		return !has || v == ""
	case "IN":
		return has && slices.ContainsFunc(f.Values, func(x any) bool { return str(x) == v })
	case "NOT_IN":
		return !slices.ContainsFunc(f.Values, func(x any) bool { return str(x) == v })
	case "CONTAINS_TOKEN":
		return has && strings.Contains(strings.ToLower(v), strings.ToLower(strings.Trim(str(f.Value), "*")))
	}
	return false
}

var crmOperators = []string{"EQ", "NEQ", "HAS_PROPERTY", "NOT_HAS_PROPERTY", "IN", "NOT_IN", "CONTAINS_TOKEN"}

func (s *Server) crmSearch(w http.ResponseWriter, r *http.Request) {
	if !s.crmAuth(w, r) {
		return
	}
	var req struct {
		FilterGroups []struct {
			Filters []crmFilter `json:"filters"`
		} `json:"filterGroups"`
		Properties []string `json:"properties"`
		Limit      int      `json:"limit"`
		After      string   `json:"after"`
	}
	body, _ := io.ReadAll(r.Body)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: "+err.Error())
		return
	}
	if req.Limit == 0 {
		req.Limit = 10
	}
	if req.Limit < 0 || req.Limit > 200 {
		s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR", "limit: must be between 1 and 200")
		return
	}
	for _, g := range req.FilterGroups {
		for _, f := range g.Filters {
			if !slices.Contains(crmOperators, f.Operator) {
				s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR",
					fmt.Sprintf("Invalid operator %q: use one of %s", f.Operator, strings.Join(crmOperators, ", ")))
				return
			}
		}
	}
	after, _ := strconv.Atoi(req.After)

	groups := make([][]crmFilter, len(req.FilterGroups))
	for i, g := range req.FilterGroups {
		groups[i] = g.Filters
	}
	s.mu.Lock()
	var hits []*crmRecord
	for _, rec := range s.crm.candidates(groups) {
		ok := len(req.FilterGroups) == 0
		for _, g := range req.FilterGroups {
			all := true
			for _, f := range g.Filters {
				all = all && f.match(rec.Properties)
			}
			ok = ok || all
		}
		if ok {
			hits = append(hits, rec)
		}
	}
	results := []any{}
	for i := after; i < len(hits) && i < after+req.Limit; i++ {
		results = append(results, hits[i].json(req.Properties))
	}
	s.mu.Unlock()

	out := map[string]any{"total": len(hits), "results": results}
	if after+req.Limit < len(hits) {
		next := strconv.Itoa(after + req.Limit)
		out["paging"] = map[string]any{"next": map[string]string{"after": next}}
	}
	writeJSON(w, http.StatusOK, out)
}

// crmLookup finds a record by id, or by a property named by ?idProperty=.
func (s *Server) crmLookup(r *http.Request) *crmRecord {
	id := r.PathValue("id")
	prop := r.URL.Query().Get("idProperty")
	s.mu.Lock()
	defer s.mu.Unlock()
	if prop == "" || prop == "hs_object_id" {
		return s.crm.byID[id]
	}
	for _, rid := range s.crm.order {
		if rec := s.crm.byID[rid]; rec.Properties[prop] == id {
			return rec
		}
	}
	return nil
}

func (s *Server) crmGet(w http.ResponseWriter, r *http.Request) {
	if !s.crmAuth(w, r) {
		return
	}
	rec := s.crmLookup(r)
	if rec == nil {
		s.crmFail(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "Object not found. objectId are usually numeric.")
		return
	}
	s.mu.Lock()
	out := rec.json(nil)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) crmUpdate(w http.ResponseWriter, r *http.Request) {
	if !s.crmAuth(w, r) {
		return
	}
	var req struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &req); err != nil {
		s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON: "+err.Error())
		return
	}
	props, err := stringProps(req.Properties)
	if err == nil {
		if msg := validateCallProps(props, false); msg != "" {
			err = fmt.Errorf("%s", msg)
		}
	}
	if err != nil {
		s.crmFail(w, http.StatusBadRequest, "VALIDATION_ERROR", err.Error())
		return
	}
	rec := s.crmLookup(r)
	if rec == nil {
		s.crmFail(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "Object not found. objectId are usually numeric.")
		return
	}
	s.mu.Lock()
	now := s.now()
	for k, v := range props {
		s.crm.set(rec, k, v)
	}
	rec.UpdatedAt = now
	s.crm.set(rec, "hs_lastmodifieddate", now.UTC().Format(time.RFC3339Nano))
	out := rec.json(nil)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) crmAccount(w http.ResponseWriter, r *http.Request) {
	if !s.crmAuth(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"portalId":              4_000_001,
		"accountType":           "STANDARD",
		"timeZone":              "US/Eastern",
		"companyCurrency":       "USD",
		"additionalCurrencies":  []string{},
		"utcOffset":             "-05:00",
		"utcOffsetMilliseconds": -18_000_000,
		"uiDomain":              "app.hubspot.com",
		"dataHostingLocation":   "na1",
	})
}
