package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// YAMLKeyError is one problem with one key of a YAML document: its dotted
// path (kafka.brokers, redis.views[0].name), its line, and what is wrong.
type YAMLKeyError struct {
	Path    string
	Line    int
	Unknown bool // the key is not a field of the target
	Msg     string
}

func (e *YAMLKeyError) Error() string {
	return fmt.Sprintf("%s (line %d): %s", e.Path, e.Line, e.Msg)
}

// DecodeStrictYAML decodes one YAML document into v; unknown keys are
// errors. seer's config files, schemas and manifests all go through it.
// Errors name the key path, never Go type names: an unknown key suggests
// the closest known one, a wrong type says which key holds it. They are
// *YAMLKeyError values joined with errors.Join.
func DecodeStrictYAML(data []byte, v any) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("document is empty")
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("want one YAML document, found more")
	}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	err := strict.Decode(v)
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	idx := map[int][]keyAt{}
	indexKeys(&doc, "", idx)
	var errs []error
	for _, msg := range te.Errors {
		errs = append(errs, describeYAMLError(msg, idx, reflect.TypeOf(v)))
	}
	return errors.Join(errs...)
}

// keyAt is a key or a scalar value found on a line.
type keyAt struct {
	path  string
	key   string // the key's own name; "" for a value
	value bool
}

func indexKeys(n *yaml.Node, path string, idx map[int][]keyAt) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexKeys(c, path, idx)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			idx[k.Line] = append(idx[k.Line], keyAt{path: p, key: k.Value})
			if val.Kind == yaml.ScalarNode {
				idx[val.Line] = append(idx[val.Line], keyAt{path: p, value: true})
			}
			indexKeys(val, p, idx)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			if c.Kind == yaml.ScalarNode {
				idx[c.Line] = append(idx[c.Line], keyAt{path: p, value: true})
			}
			indexKeys(c, p, idx)
		}
	}
}

var (
	unknownFieldRE = regexp.MustCompile("^line (\\d+): field (.+) not found in type \\S+$")
	wrongTypeRE    = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// describeYAMLError turns one of yaml's messages into a YAMLKeyError.
func describeYAMLError(msg string, idx map[int][]keyAt, target reflect.Type) error {
	if m := unknownFieldRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		for _, k := range idx[line] {
			if k.key == m[2] {
				parent := strings.TrimSuffix(strings.TrimSuffix(k.path, k.key), ".")
				e := &YAMLKeyError{Path: k.path, Line: line, Unknown: true, Msg: "unknown key"}
				if near := Closest(k.key, yamlKeys(target, parent)); near != "" {
					e.Msg += fmt.Sprintf(" (did you mean %s?)", near)
				}
				return e
			}
		}
	}
	if m := wrongTypeRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		for _, k := range idx[line] {
			if k.value {
				return &YAMLKeyError{Path: k.path, Line: line, Msg: fmt.Sprintf("%q is not %s", m[3], typeWord(m[4]))}
			}
		}
	}
	return errors.New(msg)
}

func typeWord(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration (like 500ms or 2s)"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case goType == "string":
		return "a string"
	}
	return "a mapping of the right keys"
}

// yamlKeys lists the YAML keys of the struct at path below t.
func yamlKeys(t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if path != "" {
		for _, seg := range strings.Split(path, ".") {
			name, _, _ := strings.Cut(seg, "[")
			f, ok := yamlField(t, name)
			if !ok {
				return nil
			}
			t = f
			for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
				t = t.Elem()
			}
		}
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case opts == "inline":
			keys = append(keys, yamlKeys(f.Type, "")...)
		case tag != "" && tag != "-":
			keys = append(keys, tag)
		}
	}
	return keys
}

func yamlField(t reflect.Type, name string) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			if ft, ok := yamlField(f.Type, name); ok {
				return ft, true
			}
		}
		if tag == name {
			return f.Type, true
		}
	}
	return nil, false
}

// Closest returns the candidate nearest to s by edit distance, or "" when
// none is near enough to be a plausible misspelling.
func Closest(s string, candidates []string) string {
	best, bestD := "", len(s)/2+2
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
