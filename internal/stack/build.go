package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// A target names a binary by where it lands in a bin directory: "caller" is
// ./cmd/caller, built into the directory; "plugins/webhook" is
// ./plugins/webhook, built into its plugins/ directory, where the observer's
// plugin_dir points; "nats-server" (NATSServer) is the go tool dependency
// github.com/nats-io/nats-server/v2. It is the layout make build leaves in ./bin.

// Build builds targets from the module at root into dir, one go build per
// output directory.
func Build(ctx context.Context, root, dir string, targets ...string) error {
	byDir := map[string][]string{}
	var dirs []string
	for _, t := range targets {
		sub, pkg := filepath.Dir(t), "./cmd/"+t
		switch {
		case t == NATSServer:
			pkg = natsServerPkg
		case sub != ".":
			pkg = "./" + t
		}
		if byDir[sub] == nil {
			dirs = append(dirs, sub)
		}
		byDir[sub] = append(byDir[sub], pkg)
	}
	for _, sub := range dirs {
		out := filepath.Join(dir, sub) + string(filepath.Separator)
		// "go" from the PATH: under go test, the toolchain running the test.
		cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out}, byDir[sub]...)...)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", strings.Join(byDir[sub], " "), err, msg)
		}
	}
	return nil
}

// Check returns the first of targets not in dir, with why; "" and nil when
// every one is there.
func Check(dir string, targets ...string) (missing string, err error) {
	for _, t := range targets {
		if _, err := os.Stat(filepath.Join(dir, t)); err != nil {
			return t, err
		}
	}
	return "", nil
}

// Binaries builds its targets once, on first use, and gives every later
// caller the same directory: a test binary or a harness builds once per
// run however many tests or stacks need the binaries.
type Binaries struct {
	// Root is the module root (see RepoRoot).
	Root string
	// Dir receives the binaries; empty makes a temporary directory, which
	// Close removes.
	Dir     string
	Targets []string

	once sync.Once
	dir  string
	temp bool
	err  error
}

// Build builds the binaries the first time it is called and returns their
// directory, or the first call's error.
func (b *Binaries) Build(ctx context.Context) (string, error) {
	b.once.Do(func() {
		b.dir = b.Dir
		if b.dir == "" {
			if b.dir, b.err = os.MkdirTemp("", "agent-bin-"); b.err != nil {
				b.err = fmt.Errorf("bin dir: %w", b.err)
				return
			}
			b.temp = true
		}
		b.err = Build(ctx, b.Root, b.dir, b.Targets...)
	})
	return b.dir, b.err
}

// Close removes the temporary directory Build made, if it made one. Call it
// once nothing runs the binaries any more.
func (b *Binaries) Close() error {
	if !b.temp {
		return nil
	}
	return os.RemoveAll(b.dir)
}
