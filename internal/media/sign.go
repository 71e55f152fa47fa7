package media

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// URLs builds the addresses the telephony provider fetches: the TwiML of a
// call and the audio it plays, under Base (media.public_url). With a Key,
// each carries an expiry and an HMAC-SHA256 over the kind of resource, the
// call id and that expiry, so that audio cannot be fetched by guessing ids.
type URLs struct {
	Base string
	Key  string
	TTL  time.Duration
	Now  func() time.Time
}

// The resources a URL names, which are also its first path segment.
const (
	kindTwiML = "twiml"
	kindAudio = "audio"
)

// TwiML is the URL of callID's TwiML.
func (u URLs) TwiML(callID string) string { return u.url(kindTwiML, callID) }

// Audio is the URL of callID's audio.
func (u URLs) Audio(callID string) string { return u.url(kindAudio, callID) }

func (u URLs) url(kind, callID string) string {
	s := strings.TrimRight(u.Base, "/") + "/" + kind + "/" + url.PathEscape(callID)
	if u.Key == "" {
		return s
	}
	exp := strconv.FormatInt(u.now().Add(u.TTL).Unix(), 10)
	return s + "?" + url.Values{"exp": {exp}, "sig": {u.sign(kind, callID, exp)}}.Encode()
}

// Valid says whether q signs kind and callID and has not expired; any
// query is valid without a Key.
func (u URLs) Valid(kind, callID string, q url.Values) bool {
	if u.Key == "" {
		return true
	}
	exp, sig := q.Get("exp"), q.Get("sig")
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || u.now().Unix() > n {
		return false
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	want, _ := hex.DecodeString(u.sign(kind, callID, exp))
	return hmac.Equal(got, want)
}

func (u URLs) sign(kind, callID, exp string) string {
	m := hmac.New(sha256.New, []byte(u.Key))
	m.Write([]byte(kind + "\n" + callID + "\n" + exp))
	return hex.EncodeToString(m.Sum(nil))
}

func (u URLs) now() time.Time {
	if u.Now != nil {
		return u.Now()
	}
	return time.Now()
}
