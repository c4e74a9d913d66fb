package report

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// ReadTable reads a CSV file (with a header row), JSON Lines or a flat
// Parquet file into a Table. format is csv, jsonl, parquet, or "" to go by
// the file extension.
func ReadTable(path, format string) (Table, error) {
	if format == "" {
		switch {
		case strings.HasSuffix(path, ".csv"):
			format = "csv"
		case strings.HasSuffix(path, ".jsonl"), strings.HasSuffix(path, ".ndjson"):
			format = "jsonl"
		case strings.HasSuffix(path, ".parquet"):
			format = "parquet"
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return Table{}, err
	}
	defer f.Close()
	var t Table
	switch format {
	case "csv":
		t, err = readCSV(f)
	case "jsonl":
		t, err = readJSONL(f)
	case "parquet":
		var st os.FileInfo
		if st, err = f.Stat(); err == nil {
			t, err = readParquet(f, st.Size())
		}
	default:
		return Table{}, fmt.Errorf("%s: unknown format %q (want csv, jsonl or parquet)", path, format)
	}
	if err != nil {
		return Table{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// readParquet reads a Parquet file with flat columns; values become text
// as in CSV (nulls are missing), timestamps RFC 3339 in UTC.
func readParquet(r io.ReaderAt, size int64) (Table, error) {
	pf, err := parquet.OpenFile(r, size)
	if err != nil {
		return Table{}, fmt.Errorf("reading Parquet: %w", err)
	}
	var t Table
	t.Values = map[string][]string{}
	var stamps []time.Duration // per column: the timestamp unit, or 0
	for _, path := range pf.Schema().Columns() {
		if len(path) != 1 {
			return Table{}, fmt.Errorf("column %s is nested; only flat columns are supported", strings.Join(path, "."))
		}
		t.Columns = append(t.Columns, path[0])
		var unit time.Duration
		if leaf, ok := pf.Schema().Lookup(path...); ok {
			if lt := leaf.Node.Type().LogicalType(); lt != nil {
				if ts, ok := lt.Value.(*format.TimestampType); ok && ts.Unit.Value != nil {
					unit = ts.Unit.Value.Duration()
				}
			}
		}
		stamps = append(stamps, unit)
	}
	buf := make([]parquet.Row, 512)
	for _, rg := range pf.RowGroups() {
		rows := rg.Rows()
		for {
			n, err := rows.ReadRows(buf)
			for _, row := range buf[:n] {
				for c := range t.Columns {
					t.Values[t.Columns[c]] = append(t.Values[t.Columns[c]], "")
				}
				for _, v := range row {
					if v.IsNull() {
						continue
					}
					col := t.Columns[v.Column()]
					var s string
					switch {
					case stamps[v.Column()] > 0 && v.Kind() == parquet.Int64:
						s = time.Unix(0, v.Int64()*int64(stamps[v.Column()])).UTC().Format(time.RFC3339Nano)
					case v.Kind() == parquet.ByteArray || v.Kind() == parquet.FixedLenByteArray:
						s = string(v.ByteArray())
					default:
						s = v.String()
					}
					t.Values[col][len(t.Values[col])-1] = s
				}
				t.Rows++
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				rows.Close()
				return Table{}, fmt.Errorf("reading Parquet rows: %w", err)
			}
		}
		rows.Close()
	}
	return t, nil
}

func readCSV(r io.Reader) (Table, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	header, err := cr.Read()
	if err != nil {
		return Table{}, fmt.Errorf("reading the header row: %w", err)
	}
	t := Table{Columns: header, Values: map[string][]string{}}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return t, nil
		}
		if err != nil {
			return Table{}, err // a csv.ParseError names its line
		}
		for i, c := range header {
			t.Values[c] = append(t.Values[c], rec[i])
		}
		t.Rows++
	}
}

func readJSONL(r io.Reader) (Table, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	t := Table{Values: map[string][]string{}}
	line := 0
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var obj map[string]any
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			return Table{}, fmt.Errorf("line %d: invalid JSON object: %v", line, err)
		}
		for k := range obj {
			if _, ok := t.Values[k]; !ok {
				t.Columns = append(t.Columns, k)
				t.Values[k] = make([]string, t.Rows) // earlier rows: missing
			}
		}
		for _, c := range t.Columns {
			var s string
			switch v := obj[c].(type) {
			case nil:
			case string:
				s = v
			case json.Number:
				s = v.String()
			case bool:
				s = strconv.FormatBool(v)
			default:
				return Table{}, fmt.Errorf("line %d: field %q: nested values are not supported", line, c)
			}
			t.Values[c] = append(t.Values[c], s)
		}
		t.Rows++
	}
	sort.Strings(t.Columns)
	return t, sc.Err()
}

// svgBar is one bar pair's geometry in a feature's histogram.
type svgBar struct {
	X, RefY, RefH, CurX, CurY, CurH float64
	Label                           string
}

const barHeight = 120 // pixels of the tallest bar

// bars lays out a feature's histogram, the tallest bar barHeight high.
func bars(bins []HistogramBin) []svgBar {
	top := 0.0
	for _, b := range bins {
		top = max(top, b.Reference, b.Current)
	}
	scale := barHeight / max(top, 1e-9)
	out := make([]svgBar, len(bins))
	for i, b := range bins {
		x := 10 + 40*float64(i)
		out[i] = svgBar{X: x, RefH: scale * b.Reference, RefY: barHeight - scale*b.Reference,
			CurX: x + 17, CurH: scale * b.Current, CurY: barHeight - scale*b.Current, Label: b.Label}
	}
	return out
}

var reportHTML = template.Must(template.New("report").Funcs(template.FuncMap{
	"num":   func(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) },
	"bars":  bars,
	"width": func(n int) int { return 40*n + 40 },
	"keys": func(m map[string]float64) []string {
		k := make([]string, 0, len(m))
		for x := range m {
			k = append(k, x)
		}
		sort.Strings(k)
		return k
	},
}).Parse(`<!doctype html><html><head><meta charset="utf-8"><title>seer drift report</title>
<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}
.f{border:1px solid #ddd;margin:1em 0;padding:1em}.drift{border-color:#c33}.tag{font-weight:bold;color:#c33}
.warn{color:#a60}.ref{fill:#4a78b5}.cur{fill:#e39a2d}text{font-size:9px}</style></head><body>
<h1>seer drift report</h1>
<p>Reference <b>{{.Reference.Path}}</b> ({{.Reference.Rows}} rows) against current <b>{{.Current.Path}}</b> ({{.Current.Rows}} rows).
A feature drifts when its Benjamini–Hochberg adjusted p-value (KS for numeric, χ² for categorical) is below {{.Alpha}} and its PSI is at least {{.MinPSI}}.
<b>{{.DriftedCount}}</b> of {{len .Features}} features drifted. Bars: <span style="color:#4a78b5">reference</span>, <span style="color:#e39a2d">current</span> (share of rows per bin).</p>
{{range .Features}}<div class="f{{if .Drifted}} drift{{end}}"><h2>{{.Name}} <small>({{.Kind}})</small> {{if .Drifted}}<span class="tag">drifted</span>{{end}} {{if ne .Status "ok"}}<span class="warn">{{.Status}}</span>{{end}}</h2>
{{range .Warnings}}<p class="warn">⚠ {{.}}</p>{{end}}
<table>{{$m := .Metrics}}{{range keys .Metrics}}<tr><th>{{.}}</th><td>{{num (index $m .)}}</td></tr>{{end}}</table>
<svg width="{{width (len .Bins)}}" height="190" role="img" aria-label="histogram of {{.Name}}">
{{range bars .Bins}}<rect class="ref" x="{{.X}}" y="{{.RefY}}" width="16" height="{{.RefH}}"/><rect class="cur" x="{{.CurX}}" y="{{.CurY}}" width="16" height="{{.CurH}}"/>
<text x="{{.X}}" y="132" transform="rotate(35 {{.X}} 132)">{{.Label}}</text>
{{end}}</svg></div>{{end}}</body></html>
`))

// WriteHTML renders the report with per-feature histograms of reference
// against current.
func (r *Report) WriteHTML(w io.Writer) error { return reportHTML.Execute(w, r) }
