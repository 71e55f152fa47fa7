package events

// DecodeProbed is the two-parse decoder Decode falls back to, for the
// fuzzer to hold Decode's one-parse path to.
var DecodeProbed = decodeProbed
