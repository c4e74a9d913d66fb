package testenv

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// KafkaBroker is a private single-node KRaft broker for a test that stops
// and starts it, so that other tests keep the shared one. It runs the jars
// the stack script resolved into the cache.
type KafkaBroker struct {
	Addr string
	dir  string
	args []string
	cmd  *exec.Cmd
	t    testing.TB
}

// StartKafka formats and starts a private broker on free loopback ports,
// from the stack's config (its secure listeners too, without SCRAM users);
// t.Cleanup kills it. It takes the JVM's start-up time, so tests share one.
func StartKafka(t testing.TB) *KafkaBroker {
	t.Helper()
	cache := cacheDir(t)
	lib := filepath.Join(cache, "kafka", "lib")
	if _, err := os.Stat(lib); err != nil {
		Unavailable(t, "Kafka jars not found in %s (run `deploy/local/stack.sh install kafka`): %v", lib, err)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		Unavailable(t, "java not installed: %v", err)
	}
	dir := t.TempDir()
	port, ctl := freePort(t), freePort(t)
	tpl, err := os.ReadFile(filepath.Join(RepoRoot(t), "deploy", "local", "kafka", "server.properties"))
	if err != nil {
		t.Fatal(err)
	}
	props := filepath.Join(dir, "server.properties")
	secure := filepath.Join(cache, "secure") // the stack's test CA and server certificate
	if _, err := os.Stat(filepath.Join(secure, "server.pem")); err != nil {
		Unavailable(t, "the local broker's certificates are not in %s (run `deploy/local/stack.sh up kafka`): %v", secure, err)
	}
	conf := strings.NewReplacer("@DATA@", filepath.Join(dir, "data"), "@PORT@", strconv.Itoa(port), "@CTL_PORT@", strconv.Itoa(ctl),
		"@SASL_PORT@", strconv.Itoa(freePort(t)), "@MTLS_PORT@", strconv.Itoa(freePort(t)), "@SECURE@", secure).Replace(string(tpl))
	if err := os.WriteFile(props, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	jvm := []string{"-cp", lib + "/*", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + filepath.Join(RepoRoot(t), "deploy", "local", "kafka", "log4j2.properties"), "-Dkafka.logs.dir=" + dir}
	format := exec.Command(java, append(jvm, "kafka.tools.StorageTool", "format", "-t", "seer-test-cluster-0001", "-c", props, "--standalone")...)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("formatting private Kafka storage: %v\n%s", err, out)
	}
	b := &KafkaBroker{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, args: append(jvm, "kafka.Kafka", props), t: t}
	b.Start()
	t.Cleanup(func() { b.stop(syscall.SIGKILL) })
	return b
}

// Start (re)starts the broker and waits until it accepts connections.
func (b *KafkaBroker) Start() {
	b.t.Helper()
	log, _ := os.OpenFile(filepath.Join(b.dir, "stdout.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	b.cmd = exec.Command("java", b.args...)
	b.cmd.Stdout, b.cmd.Stderr = log, log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("starting private Kafka: %v", err)
	}
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", b.Addr, time.Second); err == nil {
			c.Close()
			return
		}
	}
	out, _ := os.ReadFile(filepath.Join(b.dir, "stdout.log"))
	b.t.Fatalf("private Kafka did not answer on %s; log:\n%s", b.Addr, out)
}

// Stop shuts the broker down cleanly (SIGTERM), as a rolling restart does,
// and waits for it to exit.
func (b *KafkaBroker) Stop() { b.stop(syscall.SIGTERM) }

func (b *KafkaBroker) stop(sig syscall.Signal) {
	if b.cmd == nil || b.cmd.Process == nil || b.cmd.ProcessState != nil {
		return
	}
	b.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
}

// Proxy forwards loopback TCP connections to a real service and can hold
// every byte back, so a test can stall one client's dependency — as a
// paused or partitioned server looks to it — without touching the shared
// server.
type Proxy struct {
	Addr string

	mu     sync.Mutex
	paused bool
	resume *sync.Cond
	ln     net.Listener
}

// StartProxy listens on a free loopback port and forwards to target;
// t.Cleanup closes it.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln}
	p.resume = sync.NewCond(&p.mu)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go p.pipe(c, up)
			go p.pipe(up, c)
		}
	}()
	t.Cleanup(func() { p.Resume(); ln.Close() })
	return p
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.paused {
				p.resume.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Pause holds back every byte in both directions until Resume.
func (p *Proxy) Pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Resume lets the held bytes through.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.paused = false
	p.resume.Broadcast()
	p.mu.Unlock()
}
