package delivery

import (
	"github.com/callagent/agent/events"
	"github.com/callagent/agent/internal/observer/silence"
)

// Silence makes every alert sink leave out the notifications set's silences
// mute (see silence.Muter): they are acknowledged without delivery, counted
// and logged. Call it before Run. DeliverTo (replay --deliver) is an
// operator's explicit request and is not filtered.
func (m *Manager) Silence(set *silence.Set) {
	for _, w := range m.workers {
		if w.cfg.Kind == KindAlert {
			w.mute = silence.NewMuter(set).Mute
		}
	}
}

// silenced reports whether a is muted by a silence, counting it if so.
func (w *worker) silenced(a *events.Alert) bool {
	if w.mute == nil {
		return false
	}
	id, muted := w.mute(a, w.now())
	if !muted {
		return false
	}
	w.silencedN.Add(1)
	w.met.silenced.Inc()
	w.log.Info("alert silenced, not delivered", "silence", id, "alert_id", a.ID, "status", a.Status,
		"rule", a.Rule, "service", a.Service, "severity", a.Severity)
	return true
}
