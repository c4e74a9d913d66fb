package featurestore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// TestRedisUsers on the real Redis: the reader may HMGET and PING the
// prefix's keys and nothing else (no HSET, no other prefix); the loader may
// replace the hashes; a wrong password is refused.
func TestRedisUsers(t *testing.T) {
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.Addr = testenv.Redis(t)
	cfg.KeyPrefix = "seertest-" + ksuid.New().String()
	admin := NewClient(cfg)
	defer admin.Close()
	run := strings.ToLower(ksuid.New().String()[:10])
	reader, loader := "reader-"+run, "loader-"+run
	pw := schemas.Secret("pw-" + ksuid.New().String())
	for name, rules := range map[string][]string{reader: ReaderRules(cfg.KeyPrefix), loader: LoaderRules(cfg.KeyPrefix)} {
		if err := SetUser(ctx, admin, name, pw, rules); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		admin.Do(context.Background(), "ACL", "DELUSER", reader, loader)
		admin.Del(context.Background(), Key(cfg.KeyPrefix, "user", "u1"))
	})
	as := func(user string, password schemas.Secret) *Store {
		c := cfg
		c.Username, c.Password = user, password
		rdb := NewClient(c)
		t.Cleanup(func() { rdb.Close() })
		return &Store{rdb: rdb, prefix: cfg.KeyPrefix}
	}
	ld := as(loader, pw)
	if err := ld.rdb.HSet(ctx, Key(cfg.KeyPrefix, "user", "u1"), "count", "3", TimestampField, time.Now().UnixMilli()).Err(); err != nil {
		t.Fatalf("the loader writing a view: %v", err)
	}
	rd := as(reader, pw)
	if err := rd.Ping(ctx); err != nil {
		t.Fatalf("the reader's PING: %v", err)
	}
	if v, err := rd.rdb.HMGet(ctx, Key(cfg.KeyPrefix, "user", "u1"), "count").Result(); err != nil || len(v) != 1 || v[0] != "3" {
		t.Errorf("the reader's HMGET: %v, %v; want [3]", v, err)
	}
	if err := rd.rdb.HSet(ctx, Key(cfg.KeyPrefix, "user", "u2"), "count", "1").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("the reader writing a view: %v; want NOPERM", err)
	}
	if err := rd.rdb.HMGet(ctx, "other:user:u1", "count").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("the reader reading another prefix: %v; want NOPERM", err)
	}
	if err := as(reader, "wrong").Ping(ctx); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("a wrong password: %v; want WRONGPASS", err)
	}
}

// TestRedisTLS on the local Redis's TLS port: a client certificate from the
// test CA connects; none, or one from another CA, is refused; a CA file
// that does not vouch for the server is named in the error.
func TestRedisTLS(t *testing.T) {
	ctx := context.Background()
	dir := testenv.SecureDir(t)
	ping := func(tls schemas.TLS) error {
		cfg := DefaultConfig()
		cfg.Addr, cfg.TLS, cfg.Timeout = testenv.RedisTLS(t), tls, 5*time.Second
		if err := cfg.TLS.Load("redis.tls", time.Now()); err != nil {
			return err
		}
		rdb := NewClient(cfg)
		defer rdb.Close()
		return rdb.Ping(ctx).Err()
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := ping(schemas.TLS{CAFile: ca, CertFile: filepath.Join(dir, "serve.crt"), KeyFile: filepath.Join(dir, "serve.key")}); err != nil {
		t.Errorf("a client certificate from the test CA: %v", err)
	}
	if err := ping(schemas.TLS{CAFile: ca}); err == nil {
		t.Error("no client certificate was let in")
	}
	if err := ping(schemas.TLS{CAFile: ca, CertFile: filepath.Join(dir, "impostor", "serve.crt"), KeyFile: filepath.Join(dir, "impostor", "serve.key")}); err == nil {
		t.Error("a client certificate from another CA was let in")
	}
	err := ping(schemas.TLS{CAFile: filepath.Join(dir, "other-ca.crt"), CertFile: filepath.Join(dir, "serve.crt"), KeyFile: filepath.Join(dir, "serve.key")})
	if err == nil || !strings.Contains(err.Error(), "redis.tls.ca_file") {
		t.Errorf("a CA file that does not vouch for the server: %v; want redis.tls.ca_file named", err)
	}
}
