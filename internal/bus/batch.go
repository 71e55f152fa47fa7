package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BatchHandler handles the messages of one fetched batch together and
// returns one error per message, in order, each meaning what a Handler's
// error means (see Consume): nil acknowledges, Permanent terminates, Retry
// redelivers after its delay, any other error redelivers with backoff. A
// message without a result (a short slice) is redelivered with backoff.
type BatchHandler func(ctx context.Context, batch []*Msg) []error

// ConsumeBatch is Consume for handlers that want messages in batches, such
// as a sink that delivers many records in one call. Each worker (see
// spec.Concurrency) waits up to spec.IdleWait for a first message, then up
// to spec.BatchWait for the rest of spec.Batch, so a batch is pulled only
// when it will be handled and every message's ack wait runs only while the
// worker holds it; the batch is kept in progress while h runs. Once h
// returns, every message is settled by the one ack policy without waiting
// for each reply, and one flush confirms the batch's acks.
//
// When ctx is done the worker stops pulling; the batch in hand is still
// handled and settled within spec.Grace (then h's context is cancelled). A
// consumer deleted from under it is created again from spec.
//
// With spec.BatchWait zero the batching is adaptive, like Nagle's
// algorithm: a pull runs ahead of the handler (at most spec.Batch
// messages), and each batch is whatever has arrived, up to spec.Batch, by
// the time the handler is free. An idle consumer hands a lone message over
// at once; under load, messages gather while the previous batch is being
// handled, so batches grow with the load and nobody waits for a timer. The
// messages read ahead wait for at most the batch in hand and the next one,
// so a handler's AckWait must cover two of its batches.
func (c *Conn) ConsumeBatch(ctx context.Context, spec ConsumerSpec, h BatchHandler) error {
	return c.run(ctx, spec, func(ctx, hctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, log *slog.Logger) {
		if spec.BatchWait <= 0 {
			c.workAdaptive(ctx, hctx, cons, spec, h, log)
			return
		}
		c.workBatches(ctx, hctx, cons, spec, h, log)
	})
}

// workAdaptive is the adaptive ConsumeBatch worker: each batch is what was
// read ahead when the handler is free.
func (c *Conn) workAdaptive(ctx, hctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, h BatchHandler, log *slog.Logger) {
	c.readAhead(ctx, cons, spec, log, func(batch []*Msg, inHand *atomic.Pointer[[]*Msg]) {
		c.handleBatch(ctx, hctx, batch, spec, h, inHand, log)
	})
}

// readAhead is what the read-ahead workers share: pump reads ahead into a
// channel, and each batch, what it holds up to spec.Batch, goes to handle
// while the messages handle stores in inHand are kept in progress. Once
// ctx is done what was read ahead goes back at once.
func (c *Conn) readAhead(ctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, log *slog.Logger, handle func(batch []*Msg, inHand *atomic.Pointer[[]*Msg])) {
	in := make(chan *Msg, spec.Batch)
	var inHand atomic.Pointer[[]*Msg]
	pctx, stopProgress := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { keepInProgress(pctx, spec.AckWait/3, &inHand, log) })
	wg.Go(func() { c.pump(ctx, cons, spec, in, log) })
	defer wg.Wait()
	defer stopProgress()
	for first := range in {
		if ctx.Err() != nil {
			_ = first.raw.Nak()
			continue
		}
		handle(gather(first, in, spec.Batch), &inHand)
	}
}

// gather is first and whatever else in holds, up to n messages, without
// waiting.
func gather(first *Msg, in <-chan *Msg, n int) []*Msg {
	batch := make([]*Msg, 1, n)
	batch[0] = first
	for len(batch) < n {
		select {
		case m, ok := <-in:
			if !ok {
				return batch
			}
			batch = append(batch, m)
		default:
			return batch
		}
	}
	return batch
}

// pump pulls continuously (the client keeps up to spec.Batch messages
// requested ahead) and feeds in until ctx is done; then it drains what the
// client holds into in, so it is handed back rather than left to its ack
// wait, and closes in.
func (c *Conn) pump(ctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, in chan<- *Msg, log *slog.Logger) {
	defer close(in)
	for ctx.Err() == nil {
		it, err := cons.Messages(jetstream.PullMaxMessages(spec.Batch))
		if err != nil {
			log.Warn("pull", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		stop := context.AfterFunc(ctx, it.Drain)
		for {
			raw, err := it.Next()
			if err == nil {
				in <- newMsg(raw)
				continue
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			log.Warn("pull", "err", err)
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				it.Stop()
				if again, cerr := c.Consumer(ctx, spec); cerr == nil {
					cons = again
					log.Info("consumer created again")
				}
				sleep(ctx, time.Second)
				break
			}
		}
		stop()
	}
}

// handleBatch runs h on batch, keeping it in progress meanwhile, settles
// every message by its result and confirms the acks with one flush.
func (c *Conn) handleBatch(ctx, hctx context.Context, batch []*Msg, spec ConsumerSpec, h BatchHandler, inHand *atomic.Pointer[[]*Msg], log *slog.Logger) {
	inHand.Store(&batch)
	results := safeBatch(hctx, h, batch)
	inHand.Store(nil)
	for i, m := range batch {
		var err error
		if i < len(results) {
			err = results[i]
		} else {
			err = errors.New("no result from the batch handler")
		}
		settle(hctx, m, err, spec, true, log)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	if err := c.nc.FlushWithContext(actx); err != nil {
		log.Warn("confirm batch acks: unconfirmed messages come back after the ack wait", "err", err)
	}
	cancel()
}

func (c *Conn) workBatches(ctx, hctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, h BatchHandler, log *slog.Logger) {
	var inHand atomic.Pointer[[]*Msg]
	pctx, stopProgress := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { keepInProgress(pctx, spec.AckWait/3, &inHand, log) })
	defer wg.Wait()
	defer stopProgress()
	for ctx.Err() == nil {
		batch, err := fetchBatch(ctx, cons, spec, log)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("fetch", "err", err)
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				if again, cerr := c.Consumer(ctx, spec); cerr == nil {
					cons = again
					log.Info("consumer created again")
				}
			}
			sleep(ctx, time.Second)
			continue
		}
		if len(batch) == 0 {
			continue
		}
		c.handleBatch(ctx, hctx, batch, spec, h, &inHand, log)
	}
}

// fetchBatch pulls one batch: a first message within IdleWait (none is not
// an error), then whatever more of Batch comes within BatchWait.
func fetchBatch(ctx context.Context, cons jetstream.Consumer, spec ConsumerSpec, log *slog.Logger) ([]*Msg, error) {
	ictx, cancel := context.WithTimeout(ctx, spec.IdleWait)
	first, err := cons.Next(jetstream.FetchContext(ictx))
	cancel()
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)) {
			return nil, nil
		}
		return nil, err
	}
	batch := []*Msg{newMsg(first)}
	if spec.Batch == 1 {
		return batch, nil
	}
	var more jetstream.MessageBatch
	if spec.BatchWait > 0 {
		more, err = cons.Fetch(spec.Batch-1, jetstream.FetchMaxWait(spec.BatchWait))
	} else {
		more, err = cons.FetchNoWait(spec.Batch - 1)
	}
	if err != nil {
		// Handle what is in hand; the next pull tells if it persists.
		log.Warn("fetch rest of batch", "err", err)
		return batch, nil
	}
	for raw := range more.Messages() {
		batch = append(batch, newMsg(raw))
	}
	if err := more.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		log.Warn("fetch rest of batch", "err", err)
	}
	return batch, nil
}

// safeBatch turns a batch handler's panic into a retryable error for every
// message: the batch is redelivered with backoff, never lost.
func safeBatch(ctx context.Context, h BatchHandler, batch []*Msg) (results []error) {
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("batch handler panic: %v\n%s", r, debug.Stack())
			results = make([]error, len(batch))
			for i := range results {
				results[i] = err
			}
		}
	}()
	return h(ctx, batch)
}
