package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// committedNodes are the nodes of nats-cluster/: fixed ports next to the
// single server's 4222, stores under ./var where make cluster-demo runs.
func committedNodes() []Node {
	nodes := ClusterNodes([]int{4223, 4224, 4225}, []int{6223, 6224, 6225}, "")
	for i := range nodes {
		nodes[i].StoreDir = "./var/nats-cluster/" + nodes[i].Name
	}
	return nodes
}

// TestCommittedClusterConfigs checks that nats-cluster/node-*.conf are
// NodeConfig's output (so the test cluster and the documented one do not
// drift apart) and that nats-server reads each with nats.conf's users,
// included from the one nats-auth.conf, and routes to the two other nodes.
func TestCommittedClusterConfigs(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	single, err := server.ProcessConfigFile(filepath.Join(root, "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if len(single.Users) < 6 {
		t.Fatalf("nats.conf: %d users, want the 6 roles", len(single.Users))
	}
	nodes := committedNodes()
	for _, n := range nodes {
		path := filepath.Join(root, "nats-cluster", n.Name+".conf")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := NodeConfig(n, nodes, "../nats-auth.conf"); string(data) != want {
			t.Errorf("%s is not NodeConfig's output; regenerate it:\n%s", path, want)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if opts.ServerName != n.Name || opts.Port != n.ClientPort || opts.Cluster.Port != n.ClusterPort || opts.Cluster.Name != ClusterName {
			t.Errorf("%s: server %s port %d cluster %s:%d", path, opts.ServerName, opts.Port, opts.Cluster.Name, opts.Cluster.Port)
		}
		if len(opts.Routes) != len(nodes)-1 {
			t.Errorf("%s: %d routes, want %d", path, len(opts.Routes), len(nodes)-1)
		}
		if len(opts.Users) != len(single.Users) {
			t.Errorf("%s: %d users, nats.conf has %d", path, len(opts.Users), len(single.Users))
		}
		for i, u := range opts.Users {
			if s := single.Users[i]; u.Username != s.Username || u.Password != s.Password {
				t.Errorf("%s: user %d is %s, nats.conf's is %s", path, i, u.Username, s.Username)
			}
		}
	}
}

// TestPoll: poll retries until try succeeds, and once its context ends it
// reports try's last error from before the end, not the deadline's.
func TestPoll(t *testing.T) {
	t.Run("succeeds on the third try", func(t *testing.T) {
		n := 0
		err := poll(context.Background(), time.Millisecond, func(context.Context) error {
			if n++; n < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		if err != nil || n != 3 {
			t.Fatalf("poll = %v after %d tries, want nil after 3", err, n)
		}
	})
	t.Run("gives up with the last error before the deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		n := 0
		err := poll(ctx, time.Millisecond, func(ctx context.Context) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			n++
			return fmt.Errorf("try %d: no leader", n)
		})
		if err == nil || !strings.Contains(err.Error(), "no leader") || err.Error() != fmt.Sprintf("try %d: no leader", n) {
			t.Fatalf("poll = %v, want the last try's error (try %d: no leader)", err, n)
		}
	})
}
