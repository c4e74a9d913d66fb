package inferencelog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seer-ml/seer/schemas"
)

// fakeInserter records inserted rows in order and fails while down is set.
type fakeInserter struct {
	mu   sync.Mutex
	down bool
	rows []string // event ids in insert order
}

func (f *fakeInserter) Insert(_ context.Context, b *Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("connection refused")
	}
	for _, r := range b.Log {
		f.rows = append(f.rows, r.EventID)
	}
	return nil
}

func (f *fakeInserter) set(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeInserter) inserted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.rows...)
}

func items(from, n int) []schemas.Item {
	out := make([]schemas.Item, n)
	for i := range out {
		out[i].Event.ID = fmt.Sprintf("e%04d", from+i)
		out[i].ScoredTime = time.Now()
	}
	return out
}

func startWriter(t *testing.T, cfg Config, ins Inserter) (*Writer, func()) {
	t.Helper()
	w, err := NewWriter(cfg, ins, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return w, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		w.Close()
	}
}

func appendWait(t *testing.T, w *Writer, its []schemas.Item) {
	t.Helper()
	acked := make(chan error, 1)
	if err := w.Append(context.Background(), its, nil, func(err error) { acked <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acked:
		if err != nil {
			t.Fatalf("ack: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("append not acknowledged")
	}
}

// TestWriterSpoolsAndReplaysInOrder: while ClickHouse is down batches are
// acknowledged from the spool; when it returns every row arrives once, in
// order, and the spool empties.
func TestWriterSpoolsAndReplaysInOrder(t *testing.T) {
	cfg := DefaultConfig()
	cfg.FlushRows, cfg.FlushInterval, cfg.SpoolDir = 10, 10*time.Millisecond, t.TempDir()
	ins := &fakeInserter{}
	w, stop := startWriter(t, cfg, ins)
	defer stop()
	appendWait(t, w, items(0, 10))
	ins.set(true)
	appendWait(t, w, items(10, 10))
	appendWait(t, w, items(20, 10))
	if n := w.Spool().Len(); n == 0 {
		t.Fatal("nothing spooled while ClickHouse was down")
	}
	ins.set(false)
	appendWait(t, w, items(30, 10)) // goes behind the spooled batches
	deadline := time.Now().Add(10 * time.Second)
	for w.Spool().Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := ins.inserted()
	if len(got) != 40 {
		t.Fatalf("inserted %d rows, want 40", len(got))
	}
	for i, id := range got {
		if want := fmt.Sprintf("e%04d", i); id != want {
			t.Fatalf("row %d is %s, want %s (order lost)", i, id, want)
		}
	}
	if w.Spool().Bytes() != 0 {
		t.Errorf("spool holds %d bytes after replay", w.Spool().Bytes())
	}
}

// TestWriterReleasesInsertedRows: once a batch is inserted and
// acknowledged, the writer keeps its row buffer for the next batch but
// none of the rows' data: a row left in it would keep its item's inputs
// alive (the log rows share them) until a later batch overwrote it.
func TestWriterReleasesInsertedRows(t *testing.T) {
	cfg := DefaultConfig()
	cfg.FlushRows, cfg.FlushInterval, cfg.SpoolDir = 4, time.Hour, t.TempDir()
	w, stop := startWriter(t, cfg, &fakeInserter{})
	defer stop()
	its := items(0, 4)
	var inputs []weak.Pointer[string]
	for i := range its {
		its[i].Inputs = make([]float32, 2)
		its[i].InputStrings, its[i].InputMissing = []string{"", strconv.Itoa(i)}, make([]uint8, 2)
		inputs = append(inputs, weak.Make(&its[i].InputStrings[0]))
	}
	appendWait(t, w, its)
	its = nil
	for attempt := 0; ; attempt++ {
		runtime.GC()
		alive := 0
		for _, p := range inputs {
			if p.Value() != nil {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if attempt == 20 {
			t.Fatalf("%d of %d inserted rows' inputs still reachable from the writer", alive, len(inputs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWriterBlocksWhenSpoolFull: with ClickHouse down and the spool full,
// acknowledgements stop (so the consumer stops committing and, through
// Append blocking, consuming); nothing is dropped.
func TestWriterBlocksWhenSpoolFull(t *testing.T) {
	cfg := DefaultConfig()
	cfg.FlushRows, cfg.FlushInterval, cfg.SpoolDir, cfg.SpoolMaxBytes = 5, 5*time.Millisecond, t.TempDir(), 1 // full after one batch
	ins := &fakeInserter{down: true}
	w, stop := startWriter(t, cfg, ins)
	defer stop()
	appendWait(t, w, items(0, 5)) // spooled; the spool is now full
	acked := make(chan error, 1)
	if err := w.Append(context.Background(), items(5, 5), nil, func(err error) { acked <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-acked:
		t.Fatal("batch acknowledged although ClickHouse is down and the spool is full")
	case <-time.After(300 * time.Millisecond):
	}
	// Appends are taken while batches queue for the flusher; then they block.
	var appended atomic.Int64
	blocked := make(chan struct{})
	go func() {
		for i := 0; i < 20; i++ {
			w.Append(context.Background(), items(10+5*i, 5), nil, nil)
			appended.Add(1)
		}
		close(blocked)
	}()
	time.Sleep(500 * time.Millisecond)
	if n := appended.Load(); n == 20 {
		t.Fatal("Append never blocked while the writer was stuck")
	}
	ins.set(false)
	select {
	case err := <-acked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("batch not acknowledged after ClickHouse returned")
	}
	<-blocked
	deadline := time.Now().Add(10 * time.Second)
	for len(ins.inserted()) < 110 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := ins.inserted()
	if len(got) != 110 {
		t.Fatalf("inserted %d rows, want 110", len(got))
	}
	for i, id := range got {
		if want := fmt.Sprintf("e%04d", i); id != want {
			t.Fatalf("row %d is %s, want %s", i, id, want)
		}
	}
}

// TestSpoolSurvivesRestart: batches spooled by one process are replayed by
// the next one, before anything new.
func TestSpoolSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := sp.Append(&Batch{Log: []LogRow{{EventID: fmt.Sprintf("e%d", i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil { // the first process exits
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.SpoolDir, cfg.FlushInterval = dir, 10*time.Millisecond
	ins := &fakeInserter{}
	w, stop := startWriter(t, cfg, ins)
	defer stop()
	appendWait(t, w, []schemas.Item{{Event: schemas.Event{ID: "new"}}})
	got := ins.inserted()
	if len(got) != 4 || got[0] != "e0" || got[2] != "e2" || got[3] != "new" {
		t.Errorf("inserted %v, want e0 e1 e2 new", got)
	}
}

// TestSpoolRefusesASecondOwner: two writers numbering files in one folder
// overwrite each other's batches (issue 8: 102 batches spooled, 51 files
// left), so a second OpenSpool on a locked folder fails, naming the folder
// and the holder, until the first closes it.
func TestSpoolRefusesASecondOwner(t *testing.T) {
	dir := t.TempDir()
	first, err := OpenSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenSpool(dir, 1<<20)
	if !errors.Is(err, ErrSpoolInUse) {
		t.Fatalf("second OpenSpool on a locked folder: err = %v, want ErrSpoolInUse", err)
	}
	if msg := err.Error(); !strings.Contains(msg, dir) || !strings.Contains(msg, strconv.Itoa(os.Getpid())) {
		t.Errorf("error %q does not name the folder %s and the holder's pid", msg, dir)
	}
	cfg := DefaultConfig()
	cfg.SpoolDir = dir
	if _, err := NewWriter(cfg, &fakeInserter{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil); !errors.Is(err, ErrSpoolInUse) {
		t.Fatalf("NewWriter on a locked spool: err = %v, want ErrSpoolInUse", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := OpenSpool(dir, 1<<20)
	if err != nil {
		t.Fatalf("OpenSpool after the owner closed: %v", err)
	}
	second.Close()
}

// TestReplayQuarantinesUnreadableBatches: a spooled batch whose file
// vanished or no longer decodes is moved aside and counted, and the batches
// behind it and every new batch still reach ClickHouse; the writer never
// gets stuck spooling (issue 8: "spooled batch unreadable" every second).
func TestReplayQuarantinesUnreadableBatches(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := sp.Append(&Batch{Log: []LogRow{{EventID: fmt.Sprintf("s%d", i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	if err := os.WriteFile(sp.path(3), []byte(`{"log":[{"event_id":`), 0o600); err != nil { // torn
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	cfg.SpoolDir, cfg.FlushInterval = dir, 10*time.Millisecond
	ins := &fakeInserter{}
	w, err := NewWriter(cfg, ins, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The file of batch 1 vanishes after indexing, as when a second
	// instance replayed it.
	if err := os.Remove(sp.path(1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	appendWait(t, w, items(0, 2))
	appendWait(t, w, items(2, 2))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.Close()

	if got, want := ins.inserted(), []string{"s1", "s3", "e0000", "e0001", "e0002", "e0003"}; !slices.Equal(got, want) {
		t.Errorf("inserted %v, want %v (s0 missing, s2 corrupt)", got, want)
	}
	if got := testutil.ToFloat64(w.quarantined); got != 2 {
		t.Errorf("seer_drift_spool_quarantined_total = %v, want 2", got)
	}
	if n := w.Spool().Len(); n != 0 {
		t.Errorf("spool still indexes %d batches", n)
	}
	q, _ := os.ReadDir(filepath.Join(dir, QuarantineDir))
	if len(q) != 1 || q[0].Name() != filepath.Base(sp.path(3)) {
		t.Errorf("quarantine holds %v, want the corrupt batch %s", q, filepath.Base(sp.path(3)))
	}
}

// TestRowArray: a rowArray's box shows the row just filled, also after a
// longer row replaced its buffer and a shorter one followed.
func TestRowArray(t *testing.T) {
	var a rowArray[*float64]
	for _, row := range [][]float64{{1, 2, 3}, {4, 5, 6}, make([]float64, 40), {7}, {8, 9, 10}} {
		for i := range row {
			if row[i] == 0 {
				row[i] = float64(100 + i)
			}
		}
		got := pointTo(&a, row).([]*float64)
		if len(got) != len(row) {
			t.Fatalf("row %v: boxed %d elements", row, len(got))
		}
		for i := range row {
			if got[i] != &row[i] {
				t.Fatalf("row %v: element %d points to %v, not to the row", row, i, *got[i])
			}
		}
	}
	var m rowArray[uint8]
	copyOf(&m, []uint8{1, 1})
	if got := copyOf(&m, []uint8{0, 1}).([]uint8); got[0] != 0 || got[1] != 1 {
		t.Errorf("copyOf boxed %v, want [0 1]", got)
	}
}
