// Command sbom writes the CycloneDX (JSON) software bill of materials of
// seer's container image from its staged root filesystem: every file with
// its SHA-256; the Go modules compiled into the seer binary (from its build
// information) with the licence found in each module's source (google's
// licensecheck); the Debian packages the system libraries came from, with
// the licences of their copyright files; and the components named with
// -component (ONNX Runtime, the example models). deploy/image/build.sh
// runs it; `make image` leaves the SBOM next to the image's tag.
//
//	go run ./deploy/image/sbom -root DIR -sources FILE -binary usr/bin/seer -name seer -version TAG -out sbom.json
package main

import (
	"bufio"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"unicode"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/licensecheck"
)

type componentFlag []string

func (c *componentFlag) String() string     { return strings.Join(*c, ",") }
func (c *componentFlag) Set(v string) error { *c = append(*c, v); return nil }

func main() {
	root := flag.String("root", "", "the image's staged root filesystem")
	sources := flag.String("sources", "", "a file of 'IMAGE_PATH HOST_PATH' lines: where system files came from")
	binary := flag.String("binary", "usr/bin/seer", "the Go binary, relative to -root")
	name := flag.String("name", "seer", "the image's name")
	version := flag.String("version", "", "the image's tag")
	out := flag.String("out", "sbom.json", "where to write the SBOM")
	var extra componentFlag
	flag.Var(&extra, "component", "NAME@VERSION|LICENSE|PURL|IMAGE_PATH: a component that is neither a Go module nor a Debian package (repeatable)")
	flag.Parse()
	if *root == "" || *version == "" {
		log.Fatal("sbom: -root and -version are required")
	}
	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{
		Component: &cdx.Component{Type: cdx.ComponentTypeContainer, Name: *name, Version: *version, BOMRef: "image"},
		Tools:     &cdx.ToolsChoice{Components: &[]cdx.Component{{Type: cdx.ComponentTypeApplication, Name: "seer deploy/image/sbom"}}},
	}
	var comps []cdx.Component
	files, err := fileComponents(*root)
	if err != nil {
		log.Fatal(err)
	}
	mods, err := goModules(filepath.Join(*root, *binary))
	if err != nil {
		log.Fatal(err)
	}
	debs, err := debianPackages(*sources)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range extra {
		parts := strings.SplitN(e, "|", 4)
		if len(parts) != 4 {
			log.Fatalf("sbom: -component %q: want NAME@VERSION|LICENSE|PURL|IMAGE_PATH", e)
		}
		n, v, _ := strings.Cut(parts[0], "@")
		comps = append(comps, cdx.Component{Type: cdx.ComponentTypeLibrary, Name: n, Version: v, PackageURL: parts[2], BOMRef: parts[2],
			Licenses: licenses(parts[1]), Properties: &[]cdx.Property{{Name: "seer:image-path", Value: parts[3]}}})
	}
	comps = append(append(append(comps, mods...), debs...), files...)
	bom.Components = &comps
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	enc := cdx.NewBOMEncoder(f, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.Encode(bom); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("sbom: %d files, %d Go modules, %d Debian packages, %d other components → %s\n", len(files), len(mods), len(debs), len(extra), *out)
}

func licenses(ids ...string) *cdx.Licenses {
	var out cdx.Licenses
	for _, id := range ids {
		if id == "" {
			continue
		}
		out = append(out, cdx.LicenseChoice{License: &cdx.License{ID: id}})
	}
	if len(out) == 0 {
		return nil
	}
	return &out
}

// fileComponents lists every regular file under root with its SHA-256.
func fileComponents(root string) ([]cdx.Component, error) {
	var out []cdx.Component
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, cdx.Component{Type: cdx.ComponentTypeFile, Name: "/" + filepath.ToSlash(rel),
			Hashes: &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: hex.EncodeToString(h.Sum(nil))}}})
		return nil
	})
	return out, err
}

// goModules lists the modules compiled into the binary, each with the
// licence of its source in the module cache.
func goModules(binary string) ([]cdx.Component, error) {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("reading the build information of %s: %w", binary, err)
	}
	cache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
	modcache := strings.TrimSpace(string(cache))
	var out []cdx.Component
	for _, m := range bi.Deps {
		if m.Replace != nil {
			m = m.Replace
		}
		purl := "pkg:golang/" + m.Path + "@" + m.Version
		out = append(out, cdx.Component{Type: cdx.ComponentTypeLibrary, Name: m.Path, Version: m.Version, PackageURL: purl, BOMRef: purl,
			Hashes: goSum(m.Sum), Licenses: licenses(licenseOf(filepath.Join(modcache, escape(m.Path)+"@"+escape(m.Version)))...)})
	}
	return out, nil
}

func goSum(sum string) *[]cdx.Hash {
	if sum == "" {
		return nil
	}
	return &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: sum}} // the module's h1: hash as go.sum has it
}

// escape is the module cache's case encoding: an upper-case letter is '!'
// and its lower case.
func escape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// licenseOf classifies the licence files at the top of a source folder
// (LICENSE, COPYING, …, or a Debian copyright file) into SPDX ids.
func licenseOf(dir string) []string {
	entries, err := os.ReadDir(dir)
	var files []string
	if err == nil {
		for _, e := range entries {
			n := strings.ToUpper(e.Name())
			if !e.IsDir() && (strings.HasPrefix(n, "LICENSE") || strings.HasPrefix(n, "LICENCE") || strings.HasPrefix(n, "COPYING") || n == "COPYRIGHT") {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
	} else if st, serr := os.Stat(dir); serr == nil && !st.IsDir() {
		files = []string{dir}
	}
	seen := map[string]bool{}
	var ids []string
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, m := range licensecheck.Scan(text).Match {
			if !m.IsURL && !seen[m.ID] {
				seen[m.ID] = true
				ids = append(ids, m.ID)
			}
		}
	}
	sort.Strings(ids)
	return ids
}

// debianPackages maps the system files the image copied (sources) to the
// Debian packages that own them, with their versions and the licences of
// their copyright files.
func debianPackages(sources string) ([]cdx.Component, error) {
	if sources == "" {
		return nil, nil
	}
	f, err := os.Open(sources)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pkgs := map[string][]string{} // package → image paths
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		image, host, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if pkg := owner(host); pkg != "" {
			pkgs[pkg] = append(pkgs[pkg], image)
		}
	}
	names := make([]string, 0, len(pkgs))
	for p := range pkgs {
		names = append(names, p)
	}
	sort.Strings(names)
	var out []cdx.Component
	for _, p := range names {
		v, _ := exec.Command("dpkg-query", "-W", "-f=${Version}", p).Output()
		purl := fmt.Sprintf("pkg:deb/debian/%s@%s?arch=amd64", strings.TrimSuffix(p, ":amd64"), v)
		out = append(out, cdx.Component{Type: cdx.ComponentTypeLibrary, Name: strings.TrimSuffix(p, ":amd64"), Version: string(v), PackageURL: purl, BOMRef: purl,
			Licenses:   licenses(licenseOf(filepath.Join("/usr/share/doc", strings.TrimSuffix(p, ":amd64"), "copyright"))...),
			Properties: &[]cdx.Property{{Name: "seer:image-paths", Value: strings.Join(pkgs[p], " ")}}})
	}
	return out, nil
}

// owner is the Debian package that installed a file: dpkg -S on its path,
// its resolved path, and both with and without the /usr merge.
func owner(path string) string {
	candidates := []string{path}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		candidates = append(candidates, real)
	}
	for _, c := range append([]string(nil), candidates...) {
		if strings.HasPrefix(c, "/usr/") {
			candidates = append(candidates, strings.TrimPrefix(c, "/usr"))
		} else {
			candidates = append(candidates, "/usr"+c)
		}
	}
	for _, c := range candidates {
		out, err := exec.Command("dpkg-query", "-S", c).Output()
		if err == nil {
			pkg, _, _ := strings.Cut(strings.TrimSpace(string(out)), ": ") // "libc6:amd64: /lib/…"
			return pkg
		}
	}
	return ""
}
