package featurestore

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/seer-ml/seer/schemas"
)

// ReaderRules are the Redis ACL rules of serve's user: HMGET of the views
// and PING, on the keys under prefix, and nothing else.
func ReaderRules(prefix string) []string {
	return []string{"~" + prefix + ":*", "resetchannels", "-@all", "+hmget", "+ping"}
}

// LoaderRules are the rules of the user that writes features (seer
// features load and ingest): replace a view's hashes (MULTI, DEL, HSET,
// PEXPIRE, EXEC), or run the update script that does so unless the
// stored _ts is newer (EVALSHA, SCRIPT LOAD; the script's HGET, DEL, HSET
// and PEXPIRE), and read them, on the keys under prefix.
func LoaderRules(prefix string) []string {
	return []string{"~" + prefix + ":*", "resetchannels", "-@all", "+hmget", "+hget", "+hset", "+del", "+pexpire", "+multi", "+exec",
		"+evalsha", "+script|load", "+ping"}
}

// MonitorRules are the rules of seer monitor's user: its leases (SET NX,
// the renew and release scripts, the fencing counter) under prefix, and
// nothing of the features.
func MonitorRules(prefix string) []string {
	return []string{"~" + prefix + ":lease:*", "~" + prefix + ":fence:*", "resetchannels", "-@all",
		"+get", "+set", "+incr", "+del", "+pexpire", "+eval", "+evalsha", "+ping"}
}

// SetUser creates or replaces Redis user with password and rules, through
// rdb, a connection allowed to run ACL SETUSER; on a Redis Cluster, on
// every node.
func SetUser(ctx context.Context, rdb redis.UniversalClient, user string, password schemas.Secret, rules []string) error {
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password.Reveal()}
	for _, r := range rules {
		args = append(args, r)
	}
	set := func(ctx context.Context, node interface {
		Do(context.Context, ...any) *redis.Cmd
	}) error {
		if err := node.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("redis ACL SETUSER %s: %w", user, err)
		}
		return nil
	}
	// A cluster's nodes keep users of their own: every primary and replica
	// gets the user.
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error { return set(ctx, node) })
	}
	return set(ctx, rdb)
}
