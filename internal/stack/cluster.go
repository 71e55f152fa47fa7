package stack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/callagent/agent/internal/bus"
	"github.com/callagent/agent/internal/config"
)

// NATSServer is the Build target of the nats-server binary: the go tool
// dependency of go.mod, built like the commands into <dir>/nats-server, so
// that a cluster's nodes are real processes that kill -9 ends.
const NATSServer = "nats-server"

// natsServerPkg is the package Build builds for NATSServer.
const natsServerPkg = "github.com/nats-io/nats-server/v2"

// ClusterName is the name the cluster's nodes share.
const ClusterName = "agent"

// Node is one server of a cluster: its name (server_name, also what a
// stream's Cluster.Leader says), its ports and its files.
type Node struct {
	Name        string
	ClientPort  int
	ClusterPort int
	// StoreDir is its JetStream store, kept across a restart.
	StoreDir string
}

// URL is the node's client URL.
func (n Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.ClientPort) }

// NodeConfig is the nats-server configuration of node in a cluster of
// nodes: the same server settings as nats.conf, routes to every other node,
// and the users of the included auth file (a path relative to where the
// configuration is written, since nats-server reads an include relative to
// the including file). The committed nats-cluster/node-*.conf are its output
// for the ports 4223-4225 and 6223-6225 (a test checks they are).
func NodeConfig(node Node, nodes []Node, authInclude string) string {
	var routes []string
	for _, o := range nodes {
		if o.Name != node.Name {
			routes = append(routes, fmt.Sprintf("    nats-route://127.0.0.1:%d", o.ClusterPort))
		}
	}
	return fmt.Sprintf(`# nats-server configuration of %[1]s, one of the call agent's %[2]d-node
# JetStream cluster on one host (see README.md, "A NATS cluster"):
#
#   go tool nats-server -c nats-cluster/%[1]s.conf    # from the repository root
#
# Streams and buckets are replicated to 3 nodes when the agent's configuration
# says so (nats.streams.*.replicas, nats.buckets.replicas). The users are
# those of the single server, included from one file.

server_name: %[1]s
listen: 127.0.0.1:%[3]d
max_payload: 1MB

jetstream {
  store_dir: %[4]q
  max_memory_store: 256MB
  max_file_store: 10GB
}

cluster {
  name: %[5]s
  listen: 127.0.0.1:%[6]d
  routes: [
%[7]s
  ]
}

include %[8]q
`, node.Name, len(nodes), node.ClientPort, node.StoreDir, ClusterName, node.ClusterPort,
		strings.Join(routes, "\n"), authInclude)
}

// ClusterNodes names n nodes node-1..node-n on the given client and cluster
// ports, storing under storeRoot/<name>.
func ClusterNodes(clientPorts, clusterPorts []int, storeRoot string) []Node {
	nodes := make([]Node, len(clientPorts))
	for i := range nodes {
		name := fmt.Sprintf("node-%d", i+1)
		nodes[i] = Node{Name: name, ClientPort: clientPorts[i], ClusterPort: clusterPorts[i], StoreDir: filepath.Join(storeRoot, name)}
	}
	return nodes
}

// ClusterOptions say how StartCluster runs a cluster.
type ClusterOptions struct {
	// Server is the nats-server binary (see NATSServer).
	Server string
	// Nodes is how many servers; default 3.
	Nodes int
	// AuthFile is the users' file the nodes include, normally the
	// repository's nats-auth.conf; the roles log in with the development
	// passwords (DevPassword). Empty: no users.
	AuthFile string
	// Dir receives each node's configuration, store (<Dir>/<node>) and log
	// (<Dir>/<node>.log).
	Dir string
}

// Cluster is a JetStream cluster of real nats-server processes on
// 127.0.0.1, on free ports.
type Cluster struct {
	opts  ClusterOptions
	nodes []Node
	procs map[string]*Proc
	stack *Stack
}

// StartCluster writes one configuration per node, starts every node and
// waits until the cluster has a JetStream meta leader. The nodes die with
// this process should it die without stopping them.
func StartCluster(ctx context.Context, o ClusterOptions) (_ *Cluster, err error) {
	o.Nodes = cmp.Or(o.Nodes, 3)
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, fmt.Errorf("cluster dir: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster dir: %w", err)
	}
	ports, err := FreePorts(2 * o.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: o, procs: map[string]*Proc{}, stack: &Stack{Dir: o.Dir}}
	c.nodes = ClusterNodes(ports[:o.Nodes], ports[o.Nodes:], o.Dir)
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	include := ""
	if o.AuthFile != "" {
		abs, err := filepath.Abs(o.AuthFile)
		if err != nil {
			return nil, err
		}
		if include, err = filepath.Rel(o.Dir, abs); err != nil {
			return nil, fmt.Errorf("auth file: %w", err)
		}
	}
	for _, n := range c.nodes {
		text := NodeConfig(n, c.nodes, include)
		if include == "" {
			text = strings.Replace(text, `include ""`, "", 1)
		}
		if err := os.WriteFile(c.configPath(n.Name), []byte(text), 0o644); err != nil {
			return nil, fmt.Errorf("node config: %w", err)
		}
	}
	for _, n := range c.nodes {
		if err := c.spawn(n.Name); err != nil {
			return nil, err
		}
	}
	for _, n := range c.nodes {
		if _, err := c.procs[n.Name].WaitLog(ctx, "Server is ready", 20*time.Second); err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if err := c.WaitJetStream(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) configPath(name string) string { return filepath.Join(c.opts.Dir, name+".conf") }

func (c *Cluster) spawn(name string) error {
	p, err := c.stack.Spawn(Spec{Name: name, Path: c.opts.Server, Args: []string{"-c", c.configPath(name)}})
	if err != nil {
		return err
	}
	c.procs[name] = p
	return nil
}

// Nodes returns the cluster's nodes.
func (c *Cluster) Nodes() []Node { return append([]Node(nil), c.nodes...) }

// Proc is the process of the named node now (a restart replaces it).
func (c *Cluster) Proc(name string) *Proc { return c.procs[name] }

// URL is every node's client URL, comma-separated, as nats.url takes it.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Roles returns the credentials of every role when the nodes have users,
// and nil otherwise.
func (c *Cluster) Roles() map[string]config.Credentials {
	if c.opts.AuthFile == "" {
		return nil
	}
	return devRoles()
}

// Config is a bus configuration for the cluster, with the roles'
// credentials.
func (c *Cluster) Config() config.NATS {
	return config.NATS{URL: c.URL(), ConnectTimeout: 10 * time.Second, Roles: c.Roles()}
}

// Connect joins the cluster as role.
func (c *Cluster) Connect(ctx context.Context, role, source string, log *slog.Logger) (*bus.Conn, error) {
	return bus.Connect(ctx, c.Config(), role, source, log)
}

// WaitJetStream waits until JetStream answers through the cluster: the
// nodes have elected a meta leader.
func (c *Cluster) WaitJetStream(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	if err := poll(ctx, 200*time.Millisecond, c.jsReady); err != nil {
		return fmt.Errorf("cluster: no JetStream within %s: %w", within, err)
	}
	return nil
}

// poll calls try every interval until it succeeds or ctx ends, and returns
// nil or try's last error from before ctx ended (its first, if all came
// after).
func poll(ctx context.Context, every time.Duration, try func(context.Context) error) error {
	var last error
	for {
		err := try(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(every):
		}
	}
}

func (c *Cluster) jsReady(ctx context.Context) error {
	var opts []nats.Option
	if creds, ok := c.Roles()[config.RoleAdmin]; ok {
		opts = append(opts, nats.UserInfo(creds.User, creds.Password))
	}
	nc, err := nats.Connect(c.URL(), opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(rctx)
	return err
}

// Leader is the name of the node leading stream now, through conn; it
// waits up to within for the stream to have one (after a leader's loss, the
// others elect the next).
func Leader(ctx context.Context, conn *bus.Conn, stream string, within time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var name string
	err := poll(ctx, 100*time.Millisecond, func(ctx context.Context) (err error) {
		name, err = leader(ctx, conn, stream)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("leader of %s: %w (%w)", stream, err, ctx.Err())
	}
	return name, nil
}

func leader(ctx context.Context, conn *bus.Conn, stream string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := conn.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", errors.New("no leader")
	}
	return info.Cluster.Leader, nil
}

// Current waits until every replica of every named stream is current (the
// followers have caught up with the leader) and none is offline, up to
// within: after a node restarts, before another may be lost.
func Current(ctx context.Context, conn *bus.Conn, within time.Duration, streams ...string) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for _, name := range streams {
		if err := poll(ctx, 100*time.Millisecond, func(ctx context.Context) error { return current(ctx, conn, name) }); err != nil {
			return fmt.Errorf("stream %s: replicas not current: %w", name, err)
		}
	}
	return nil
}

func current(ctx context.Context, conn *bus.Conn, name string) error {
	// Bounded per try: a request caught by a reconnect is given up on and
	// sent again, not waited for until the deadline.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := conn.Stream(ctx, name)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return errors.New("no leader")
	}
	if want := info.Config.Replicas - 1; len(info.Cluster.Replicas) < want {
		return fmt.Errorf("%d of %d followers known", len(info.Cluster.Replicas), want)
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return fmt.Errorf("%s: current %v, offline %v, lag %d", r.Name, r.Current, r.Offline, r.Lag)
		}
	}
	return nil
}

// ConsumersCurrent waits, as Current does for streams, until every replica
// of each named durable consumer of stream is current: a consumer's
// replicas catch up apart from its stream's.
func ConsumersCurrent(ctx context.Context, conn *bus.Conn, within time.Duration, stream string, durables ...string) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for _, name := range durables {
		if err := poll(ctx, 100*time.Millisecond, func(ctx context.Context) error { return consumerCurrent(ctx, conn, stream, name) }); err != nil {
			return fmt.Errorf("consumer %s on %s: replicas not current: %w", name, stream, err)
		}
	}
	return nil
}

func consumerCurrent(ctx context.Context, conn *bus.Conn, stream, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := conn.ConsumerInfo(ctx, stream, name)
	if err != nil {
		return err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return errors.New("no leader")
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return fmt.Errorf("%s: current %v, offline %v, lag %d", r.Name, r.Current, r.Offline, r.Lag)
		}
	}
	return nil
}

// Kill is kill -9 of the named node, as a crashed machine would end it.
func (c *Cluster) Kill(ctx context.Context, name string) error {
	p := c.procs[name]
	if p == nil {
		return fmt.Errorf("no node %s", name)
	}
	return p.Kill(ctx)
}

// Restart starts the named node again from its configuration and store
// (after Kill, or stopping it) and waits until it is ready for clients.
func (c *Cluster) Restart(ctx context.Context, name string) error {
	p := c.procs[name]
	if p == nil {
		return fmt.Errorf("no node %s", name)
	}
	if !p.Exited() {
		return fmt.Errorf("restart %s: still running", name)
	}
	np, err := c.stack.Restart(p, time.Second)
	if err != nil {
		return err
	}
	c.procs[name] = np
	if _, err := np.WaitLog(ctx, "Server is ready", 20*time.Second); err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	return nil
}

// Stop stops every node (SIGTERM, then SIGKILL after a grace).
func (c *Cluster) Stop() { c.stack.Stop(5 * time.Second) }
