package sink

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/hashicorp/go-plugin"
)

// Serve serves s as a sink plugin over gRPC and returns when the host is done
// with the process. It is all a plugin's main needs:
//
//	func main() { sink.Serve(&mysink.Sink{}) }
//
// Serve also makes Logger() the process's default slog logger, so that slog
// calls in the plugin and its libraries reach the observer's log with their
// levels and attributes. Run by hand, outside the observer, the binary says
// it is a plugin and exits.
func Serve(s Sink) {
	log := Logger()
	slog.SetDefault(log)
	go watchHost(os.Getppid(), hostCheckEvery, func() {
		log.Error("the observer that started this plugin is gone; exiting")
		os.Exit(1)
	})
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake(),
		Plugins:         plugin.PluginSet{pluginName: &grpcPlugin{impl: s, log: log}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}

// hostCheckEvery is how often a plugin checks that its host still runs.
const hostCheckEvery = time.Second

// watchHost calls gone once the process's parent is no longer host: the
// observer died without stopping the plugin (kill -9, a crash) and the
// plugin was re-parented. go-plugin notices nothing then, and the plugin
// would otherwise live on, idle, after every crash of the observer.
func watchHost(host int, every time.Duration, gone func()) {
	if host <= 1 {
		return // started by init or a reaper: there is no host to watch
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if os.Getppid() != host {
			gone()
			return
		}
	}
}

// Logger returns a logger for use inside a plugin process. It writes hclog's
// JSON lines to stderr, which go-plugin relays to the host, where they land
// in the observer's log under the sink's name with their level kept.
func Logger() *slog.Logger {
	return newPluginLogger(os.Stderr)
}

func newPluginLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       slog.LevelDebug, // the host filters by its own level
		ReplaceAttr: hclogKeys,
	}))
}

// hclogTime is the only timestamp layout go-plugin's relay parses.
const hclogTime = "2006-01-02T15:04:05.000000Z07:00"

// hclogKeys renames slog's built-in keys to the ones go-plugin's relay reads
// (@timestamp, @level, @message), with hclog's level names.
func hclogKeys(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("@timestamp", a.Value.Time().Format(hclogTime))
	case slog.LevelKey:
		level, _ := a.Value.Any().(slog.Level)
		return slog.String("@level", hclogLevelName(level))
	case slog.MessageKey:
		a.Key = "@message"
	}
	return a
}

func hclogLevelName(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}
