package monitor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease elects one active monitor through Redis. The holder's id sits in
// key with a TTL and is renewed well before it expires; a standby takes
// the key once it lapses. Each acquisition increments a fencing counter:
// a monitor writes alerts only while the counter still holds its token,
// so one that lost the lease (a long pause, a partition) cannot overwrite
// its successor. A Lease is used by one goroutine.
type Lease struct {
	rdb   redis.UniversalClient
	key   string
	fence string
	id    string
	ttl   time.Duration
	token uint64
}

// NewLease returns a lease on name for holder id.
func NewLease(rdb redis.UniversalClient, prefix, name, id string, ttl time.Duration) *Lease {
	return &Lease{rdb: rdb, key: prefix + ":lease:" + name, fence: prefix + ":fence:" + name, id: id, ttl: ttl}
}

var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// Hold acquires or renews the lease and reports whether this holder has it,
// with its fencing token.
func (l *Lease) Hold(ctx context.Context) (bool, uint64, error) {
	if l.token != 0 {
		n, err := renewScript.Run(ctx, l.rdb, []string{l.key}, l.id, l.ttl.Milliseconds()).Int()
		if err != nil {
			return false, 0, fmt.Errorf("renewing lease: %w", err)
		}
		if n == 1 {
			return true, l.token, nil
		}
		l.token = 0 // lost: someone else holds it now
	}
	ok, err := l.rdb.SetNX(ctx, l.key, l.id, l.ttl).Result()
	if err != nil {
		return false, 0, fmt.Errorf("acquiring lease: %w", err)
	}
	if !ok {
		return false, 0, nil
	}
	tok, err := l.rdb.Incr(ctx, l.fence).Uint64()
	if err != nil {
		return false, 0, fmt.Errorf("fencing token: %w", err)
	}
	l.token = tok
	return true, tok, nil
}

// Current reports whether token is still the newest fencing token.
func (l *Lease) Current(ctx context.Context, token uint64) (bool, error) {
	v, err := l.rdb.Get(ctx, l.fence).Uint64()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return v == token, nil
}

// Release gives the lease up if this holder has it.
func (l *Lease) Release(ctx context.Context) {
	if l.token == 0 {
		return
	}
	redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`).Run(ctx, l.rdb, []string{l.key}, l.id)
	l.token = 0
}
