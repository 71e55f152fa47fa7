package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/callagent/agent/sink/internal/pb"
)

// The go-plugin handshake. The cookie is not a secret: it only stops a user
// from running a plugin binary by hand, or the observer from loading a binary
// that is not a sink plugin. ProtocolVersion changes when sink.proto changes
// incompatibly.
const (
	protocolVersion  = 1
	magicCookieKey   = "CALLAGENT_SINK_PLUGIN"
	magicCookieValue = "9f1c3e7a-sink-v1"
	pluginName       = "sink"
)

func handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  protocolVersion,
		MagicCookieKey:   magicCookieKey,
		MagicCookieValue: magicCookieValue,
	}
}

// grpcPlugin is the go-plugin binding: impl is set in the plugin process and
// unused on the host.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Sink
	log  *slog.Logger
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServer(s, &server{impl: p.impl, log: p.log})
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &client{rpc: pb.NewSinkClient(c)}, nil
}

// server runs in the plugin process and calls the author's Sink.
type server struct {
	pb.UnimplementedSinkServer
	impl Sink
	log  *slog.Logger
}

func (s *server) Configure(ctx context.Context, req *pb.ConfigureRequest) (_ *pb.ConfigureResponse, err error) {
	defer s.recover("configure", &err)
	if err := s.impl.Configure(ctx, req.GetConfig()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.ConfigureResponse{}, nil
}

func (s *server) Deliver(ctx context.Context, req *pb.DeliverRequest) (_ *pb.DeliverResponse, err error) {
	defer s.recover("deliver", &err)
	batch := make([]Record, len(req.GetRecords()))
	for i, r := range req.GetRecords() {
		batch[i] = Record{ID: r.GetId(), Kind: r.GetKind(), Subject: r.GetSubject(), Data: r.GetData()}
	}
	results, err := s.impl.Deliver(ctx, batch)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.DeliverResponse{Results: make([]*pb.Result, len(results))}
	for i, r := range results {
		out.Results[i] = &pb.Result{
			Id:           r.ID,
			Status:       pb.Status(r.Status),
			Reason:       r.Reason,
			RetryAfterMs: r.RetryAfter.Milliseconds(),
		}
	}
	return out, nil
}

func (s *server) Health(ctx context.Context, _ *pb.HealthRequest) (_ *pb.HealthResponse, err error) {
	defer s.recover("health", &err)
	if err := s.impl.Health(ctx); err != nil {
		return nil, toStatus(err)
	}
	return &pb.HealthResponse{}, nil
}

// recover turns a panic in the author's code into an error for this call:
// the process keeps serving, the host retries the batch under its own policy,
// and the stack reaches the host's log.
func (s *server) recover(call string, err *error) {
	if v := recover(); v != nil {
		s.log.Error("sink panicked", "call", call, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "sink panicked in %s: %v", call, v)
	}
}

// toStatus carries the sentinel errors across the process boundary as gRPC
// codes; the message travels as it is.
func toStatus(err error) error {
	code := codes.Unknown
	switch {
	case errors.Is(err, ErrConfig):
		code = codes.InvalidArgument
	case errors.Is(err, ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// remoteError is an error returned by the plugin process: its text is the
// plugin's, and errors.Is matches the sentinel its gRPC code stands for.
type remoteError struct {
	msg string
	is  error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.is }

// fromStatus is the inverse of toStatus. A transport failure (the process
// died, the socket closed) arrives as Unavailable and becomes ErrUnavailable.
func fromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return &remoteError{msg: st.Message(), is: ErrConfig}
	case codes.Unavailable:
		return &remoteError{msg: ErrUnavailable.Error() + ": " + st.Message(), is: ErrUnavailable}
	case codes.DeadlineExceeded:
		return &remoteError{msg: st.Message(), is: context.DeadlineExceeded}
	case codes.Canceled:
		return &remoteError{msg: st.Message(), is: context.Canceled}
	}
	return errors.New(st.Message())
}

// client runs in the host and implements Sink over gRPC.
type client struct {
	rpc pb.SinkClient
}

func (c *client) Configure(ctx context.Context, config []byte) error {
	if len(config) == 0 {
		// Sinks may unmarshal their section without checking for emptiness.
		config = []byte("{}")
	}
	_, err := c.rpc.Configure(ctx, &pb.ConfigureRequest{Config: config})
	if err != nil {
		return fromStatus(err)
	}
	return nil
}

func (c *client) Deliver(ctx context.Context, batch []Record) ([]Result, error) {
	req := &pb.DeliverRequest{Records: make([]*pb.Record, len(batch))}
	for i, r := range batch {
		req.Records[i] = &pb.Record{Id: r.ID, Kind: r.Kind, Subject: r.Subject, Data: r.Data}
	}
	resp, err := c.rpc.Deliver(ctx, req)
	if err != nil {
		return nil, fromStatus(err)
	}
	return align(batch, resp.GetResults()), nil
}

func (c *client) Health(ctx context.Context) error {
	if _, err := c.rpc.Health(ctx, &pb.HealthRequest{}); err != nil {
		return fromStatus(err)
	}
	return nil
}

// align returns exactly one result per record, in batch order, whatever the
// plugin sent: a record the plugin did not report on, or reported with an
// unknown status, is Retryable, so a buggy plugin cannot lose a record.
func align(batch []Record, got []*pb.Result) []Result {
	byID := make(map[string]*pb.Result, len(got))
	for _, r := range got {
		if _, dup := byID[r.GetId()]; !dup {
			byID[r.GetId()] = r
		}
	}
	out := make([]Result, len(batch))
	for i, rec := range batch {
		r, ok := byID[rec.ID]
		switch {
		case !ok:
			out[i] = Result{ID: rec.ID, Status: Retryable, Reason: "plugin returned no result for this record"}
		case Status(r.GetStatus()) < Delivered || Status(r.GetStatus()) > Permanent:
			out[i] = Result{ID: rec.ID, Status: Retryable, Reason: fmt.Sprintf("plugin returned unknown status %d: %s", r.GetStatus(), r.GetReason())}
		default:
			out[i] = Result{
				ID:         rec.ID,
				Status:     Status(r.GetStatus()),
				Reason:     r.GetReason(),
				RetryAfter: time.Duration(max(r.GetRetryAfterMs(), 0)) * time.Millisecond,
			}
		}
	}
	return out
}
