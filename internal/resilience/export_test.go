package resilience

// PeerAttempts is how many peers' attempt events f has handled, so a test can
// wait for the fleet to have counted what a peer published.
func PeerAttempts(f *Fleet) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peerSeen
}
