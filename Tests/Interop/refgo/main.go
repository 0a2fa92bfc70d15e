// estargz-ref: a thin driver around the reference Go implementation
// (github.com/containerd/stargz-snapshotter/estargz, v0.12) used by the
// swift-estargz interop tests.
//
// Build (a newer Go panics when v0.12 writes its footer):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode /usr/lib/go-1.19/bin/go build -o estargz-ref ./Tests/Interop/refgo
//
// Subcommands:
//
//	build IN.tar OUT.blob [-level N] [-chunk-size N] [-prioritized FILE] [-compression gzip|zstdchunked]
//	    (zstdchunked: -level is a zstd level, default 3 = zstd.SpeedDefault as nerdctl/ctr-remote;
//	    the JSON result also carries the zstd:chunked annotations)
//	legacy IN.blob OUT.blob
//	dump BLOB [-toc-digest D]
//	cat BLOB PATH [-toc-digest D]   (content, every chunk verified)
//	entries BLOB   (TOC entries in TOC order: name, type, offset, nextOffset, chunkOffset, chunkSize)
//	verify BLOB [-toc-digest D]   (Open, VerifyTOC, read every chunk through its verifier; no listing)
//	list BLOB   (Open and walk the whole tree; prints the number of entries)
//
// verify and list are the Go baselines of the side-by-side benchmark (Benchmarks/sidebyside.py).
// Every reading subcommand accepts eStargz, legacy stargz and zstd:chunked blobs.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "estargz-ref: "+format+"\n", args...)
	os.Exit(1)
}

// parseArgs splits positional arguments from "-name value" flags (flags may
// appear anywhere; "--name" is accepted too).
func parseArgs(args []string, known map[string]bool) (pos []string, flags map[string]string) {
	flags = map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			name := strings.TrimLeft(a, "-")
			val := ""
			if eq := strings.IndexByte(name, '='); eq >= 0 {
				name, val = name[:eq], name[eq+1:]
			} else {
				if i+1 >= len(args) {
					fail("flag %s needs a value", a)
				}
				i++
				val = args[i]
			}
			if !known[name] {
				fail("unknown flag %s", a)
			}
			flags[name] = val
			continue
		}
		pos = append(pos, a)
	}
	return
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: estargz-ref build|legacy|dump ...")
	}
	switch os.Args[1] {
	case "build":
		cmdBuild(os.Args[2:])
	case "legacy":
		cmdLegacy(os.Args[2:])
	case "dump":
		cmdDump(os.Args[2:])
	case "entries":
		cmdEntries(os.Args[2:])
	case "cat":
		cmdCat(os.Args[2:])
	case "verify":
		cmdVerify(os.Args[2:])
	case "list":
		cmdList(os.Args[2:])
	default:
		fail("unknown subcommand %q", os.Args[1])
	}
}

func openSection(p string) (*os.File, *io.SectionReader) {
	f, err := os.Open(p)
	if err != nil {
		fail("%v", err)
	}
	st, err := f.Stat()
	if err != nil {
		fail("%v", err)
	}
	return f, io.NewSectionReader(f, 0, st.Size())
}

func cmdBuild(args []string) {
	pos, flags := parseArgs(args, map[string]bool{"level": true, "chunk-size": true, "prioritized": true, "compression": true})
	if len(pos) != 2 {
		fail("usage: estargz-ref build IN.tar OUT.blob [-level N] [-chunk-size N] [-prioritized FILE]")
	}
	var opts []estargz.Option
	useZstd := false
	switch flags["compression"] {
	case "", "gzip":
	case "zstdchunked":
		useZstd = true
	default:
		fail("bad -compression %q (gzip or zstdchunked)", flags["compression"])
	}
	level := -1
	if v, ok := flags["level"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			fail("bad -level: %v", err)
		}
		level = n
		if !useZstd {
			opts = append(opts, estargz.WithCompressionLevel(n))
		}
	}
	metadata := map[string]string{}
	if useZstd {
		// As the reference's nativeconverter/zstdchunked (what ctr-remote and nerdctl run).
		encLevel := zstd.SpeedDefault
		if level >= 0 {
			encLevel = zstd.EncoderLevelFromZstd(level)
		}
		opts = append(opts, estargz.WithCompression(&zstdCompression{
			new(zstdchunked.Decompressor),
			&zstdchunked.Compressor{CompressionLevel: encLevel, Metadata: metadata},
		}))
	}
	if v, ok := flags["chunk-size"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			fail("bad -chunk-size: %v", err)
		}
		opts = append(opts, estargz.WithChunkSize(n))
	}
	if v, ok := flags["prioritized"]; ok {
		data, err := os.ReadFile(v)
		if err != nil {
			fail("%v", err)
		}
		var files []string
		for _, l := range strings.Split(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				files = append(files, l)
			}
		}
		opts = append(opts, estargz.WithPrioritizedFiles(files))
	}
	in, sr := openSection(pos[0])
	defer in.Close()
	blob, err := estargz.Build(sr, opts...)
	if err != nil {
		fail("build: %v", err)
	}
	out, err := os.Create(pos[1])
	if err != nil {
		fail("%v", err)
	}
	n, err := io.Copy(out, blob)
	if err != nil {
		fail("writing blob: %v", err)
	}
	if err := blob.Close(); err != nil {
		fail("closing blob: %v", err)
	}
	if err := out.Close(); err != nil {
		fail("%v", err)
	}
	// Uncompressed size: decompress the whole (multi-member) gzip blob, or all
	// zstd frames (skippable frames skipped).
	f, err := os.Open(pos[1])
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	var zr io.Reader
	if useZstd {
		zd, err := zstd.NewReader(f)
		if err != nil {
			fail("reopen: %v", err)
		}
		defer zd.Close()
		zr = zd
	} else {
		gr, err := gzip.NewReader(f)
		if err != nil {
			fail("reopen: %v", err)
		}
		zr = gr
	}
	un, err := io.Copy(io.Discard, zr)
	if err != nil {
		fail("decompress: %v", err)
	}
	res := map[string]interface{}{
		"tocDigest":        blob.TOCDigest().String(),
		"diffID":           blob.DiffID().String(),
		"compressedSize":   n,
		"uncompressedSize": un,
		"annotations":      metadata,
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
}

func cmdLegacy(args []string) {
	pos, _ := parseArgs(args, map[string]bool{})
	if len(pos) != 2 {
		fail("usage: estargz-ref legacy IN.blob OUT.blob")
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		fail("%v", err)
	}
	if len(data) < estargz.FooterSize {
		fail("blob too small")
	}
	tocOff, footerSize, err := estargz.OpenFooter(io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))))
	if err != nil {
		fail("reading footer: %v", err)
	}
	if footerSize != estargz.FooterSize {
		fail("input is not an eStargz blob (footer size %d)", footerSize)
	}
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	gz.Header.Extra = []byte(fmt.Sprintf("%016xSTARGZ", tocOff))
	if err := gz.Close(); err != nil {
		fail("%v", err)
	}
	if buf.Len() != 47 {
		fail("legacy footer is %d bytes, want 47", buf.Len())
	}
	out := append(append([]byte{}, data[:len(data)-estargz.FooterSize]...), buf.Bytes()...)
	if err := os.WriteFile(pos[1], out, 0644); err != nil {
		fail("%v", err)
	}
}

type dumpEntry struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Size     int64             `json:"size"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	ModTime  int64             `json:"modtime"`
	LinkName string            `json:"linkName"`
	DevMajor int               `json:"devMajor"`
	DevMinor int               `json:"devMinor"`
	Xattrs   map[string]string `json:"xattrs"`
	NumLink  int               `json:"numLink"`
	SHA256   string            `json:"sha256,omitempty"`
}

func cmdDump(args []string) {
	pos, flags := parseArgs(args, map[string]bool{"toc-digest": true})
	if len(pos) != 1 {
		fail("usage: estargz-ref dump BLOB [-toc-digest D]")
	}
	f, sr := openSection(pos[0])
	defer f.Close()
	r, err := estargz.Open(sr, openOpts...)
	if err != nil {
		fail("open: %v", err)
	}
	var v estargz.TOCEntryVerifier
	if d, ok := flags["toc-digest"]; ok {
		dg, err := digest.Parse(d)
		if err != nil {
			fail("bad -toc-digest: %v", err)
		}
		v, err = r.VerifyTOC(dg)
		if err != nil {
			fail("VerifyTOC: %v", err)
		}
	} else {
		v, err = r.Verifiers()
		if err != nil {
			fail("Verifiers: %v", err)
		}
	}
	root, ok := r.Lookup("")
	if !ok {
		fail("no root entry")
	}
	var out []dumpEntry
	var walk func(p string, e *estargz.TOCEntry)
	walk = func(p string, e *estargz.TOCEntry) {
		var names []string
		children := map[string]*estargz.TOCEntry{}
		e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
			names = append(names, base)
			children[base] = c
			return true
		})
		sort.Strings(names)
		for _, base := range names {
			c := children[base]
			cp := base
			if p != "" {
				cp = path.Join(p, base)
			}
			out = append(out, describe(r, v, cp, c))
			if c.Type == "dir" {
				walk(cp, c)
			}
		}
	}
	walk("", root)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	w := json.NewEncoder(os.Stdout)
	w.SetEscapeHTML(false)
	for _, d := range out {
		if err := w.Encode(d); err != nil {
			fail("%v", err)
		}
	}
}

func describe(r *estargz.Reader, v estargz.TOCEntryVerifier, p string, e *estargz.TOCEntry) dumpEntry {
	d := dumpEntry{
		Name:     p,
		Type:     e.Type,
		Size:     e.Size,
		Mode:     e.Mode,
		UID:      e.UID,
		GID:      e.GID,
		LinkName: e.LinkName,
		DevMajor: e.DevMajor,
		DevMinor: e.DevMinor,
		Xattrs:   map[string]string{},
		NumLink:  e.NumLink,
	}
	if e.ModTime3339 != "" {
		d.ModTime = e.ModTime().Unix()
	}
	for k, val := range e.Xattrs {
		d.Xattrs[k] = base64.StdEncoding.EncodeToString(val)
	}
	if e.Type == "reg" {
		d.SHA256 = fileDigest(r, v, p, e)
	}
	return d
}

// fileDigest reads the file through r.OpenFile, verifying every chunk with
// the TOC verifier, and returns the sha256 of the whole content.
func fileDigest(r *estargz.Reader, v estargz.TOCEntryVerifier, p string, e *estargz.TOCEntry) string {
	sr, err := r.OpenFile(p)
	if err != nil {
		fail("OpenFile(%q): %v", p, err)
	}
	h := sha256.New()
	// Chunks are indexed under the entry's own (canonical) name: hardlinks
	// resolve to it.
	name := e.Name
	var off int64
	for off < e.Size {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok {
			fail("%q: no chunk for offset %d", p, off)
		}
		if ce.ChunkOffset != off || ce.ChunkSize <= 0 {
			fail("%q: chunk for offset %d starts at %d size %d", p, off, ce.ChunkOffset, ce.ChunkSize)
		}
		buf := make([]byte, ce.ChunkSize)
		n, err := sr.ReadAt(buf, ce.ChunkOffset)
		if int64(n) != ce.ChunkSize {
			fail("%q: reading chunk at %d: got %d of %d bytes: %v", p, off, n, ce.ChunkSize, err)
		}
		cv, err := v.Verifier(ce)
		if err != nil {
			fail("%q: verifier for chunk at %d: %v", p, off, err)
		}
		cv.Write(buf)
		if !cv.Verified() {
			fail("%q: chunk at offset %d (size %d) failed verification", p, off, ce.ChunkSize)
		}
		h.Write(buf)
		off += ce.ChunkSize
	}
	// Also check the whole-file read path agrees. One big ReadAt: the
	// reference re-inflates from the chunk start on every ReadAt, so small
	// reads (io.Copy's 32 KiB) are quadratic in the chunk size.
	h2 := sha256.New()
	whole := make([]byte, e.Size)
	if n, err := sr.ReadAt(whole, 0); int64(n) != e.Size {
		fail("%q: reading: got %d of %d bytes: %v", p, n, e.Size, err)
	}
	h2.Write(whole)
	s1, s2 := hex.EncodeToString(h.Sum(nil)), hex.EncodeToString(h2.Sum(nil))
	if s1 != s2 {
		fail("%q: chunked read and whole read differ", p)
	}
	if e.Digest != "" && e.Digest != "sha256:"+s1 {
		fail("%q: content digest %s does not match TOC digest %s", p, s1, e.Digest)
	}
	return s1
}

// cmdEntries prints every TOC entry (chunks included) in TOC order, one JSON
// object a line, with the name cleaned the way the reader cleans it.
func cmdEntries(args []string) {
	pos, _ := parseArgs(args, map[string]bool{})
	if len(pos) != 1 {
		fail("usage: estargz-ref entries BLOB")
	}
	f, sr := openSection(pos[0])
	defer f.Close()
	r, err := estargz.Open(sr, openOpts...)
	if err != nil {
		fail("open: %v", err)
	}
	w := json.NewEncoder(os.Stdout)
	w.SetEscapeHTML(false)
	// The Reader does not expose TOC order, so re-read the TOC JSON.
	toc, err := readTOC(sr)
	if err != nil {
		fail("%v", err)
	}
	lastName := ""
	for _, e := range toc.Entries {
		name := strings.TrimPrefix(path.Clean("/"+e.Name), "/")
		if e.Type == "chunk" {
			name = lastName
		} else {
			lastName = name
		}
		var next int64
		if e.Type == "reg" || e.Type == "chunk" {
			if ce, ok := r.ChunkEntryForOffset(name, e.ChunkOffset); ok {
				next = ce.NextOffset()
			}
		}
		w.Encode(map[string]interface{}{
			"name": name, "type": e.Type, "offset": e.Offset, "nextOffset": next,
			"chunkOffset": e.ChunkOffset, "chunkSize": e.ChunkSize,
		})
	}
}

type zstdCompression struct {
	*zstdchunked.Decompressor
	*zstdchunked.Compressor
}

// openOpts lets estargz.Open read zstd:chunked blobs too (as the snapshotter does).
var openOpts = []estargz.OpenOption{estargz.WithDecompressors(new(zstdchunked.Decompressor))}

// readTOC decompresses the TOC JSON (the tar entry just before the footer, or
// the zstd:chunked TOC frame).
func readTOC(sr *io.SectionReader) (*estargz.JTOC, error) {
	if sr.Size() >= zstdchunked.FooterSize {
		footer := make([]byte, zstdchunked.FooterSize)
		if _, err := sr.ReadAt(footer, sr.Size()-zstdchunked.FooterSize); err != nil {
			return nil, err
		}
		d := new(zstdchunked.Decompressor)
		if _, tocOff, tocSize, err := d.ParseFooter(footer); err == nil {
			toc, _, err := d.ParseTOC(io.NewSectionReader(sr, tocOff, tocSize))
			return toc, err
		}
	}
	tocOff, footerSize, err := estargz.OpenFooter(sr)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(io.NewSectionReader(sr, tocOff, sr.Size()-tocOff-footerSize))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		return nil, err
	}
	if h.Name != estargz.TOCTarName {
		return nil, fmt.Errorf("TOC tar entry is %q", h.Name)
	}
	var toc estargz.JTOC
	if err := json.NewDecoder(tr).Decode(&toc); err != nil {
		return nil, err
	}
	return &toc, nil
}

func openVerified(blob string, flags map[string]string) (*os.File, *estargz.Reader, estargz.TOCEntryVerifier) {
	f, sr := openSection(blob)
	r, err := estargz.Open(sr, openOpts...)
	if err != nil {
		fail("open: %v", err)
	}
	var v estargz.TOCEntryVerifier
	if d, ok := flags["toc-digest"]; ok {
		dg, err := digest.Parse(d)
		if err != nil {
			fail("bad -toc-digest: %v", err)
		}
		if v, err = r.VerifyTOC(dg); err != nil {
			fail("VerifyTOC: %v", err)
		}
	} else if v, err = r.Verifiers(); err != nil {
		fail("Verifiers: %v", err)
	}
	return f, r, v
}

// cmdCat writes one regular file's content (chunks verified) to stdout.
func cmdCat(args []string) {
	pos, flags := parseArgs(args, map[string]bool{"toc-digest": true})
	if len(pos) != 2 {
		fail("usage: estargz-ref cat BLOB PATH [-toc-digest D]")
	}
	f, r, v := openVerified(pos[0], flags)
	defer f.Close()
	e, ok := r.Lookup(pos[1])
	if !ok {
		fail("%q: not found", pos[1])
	}
	if e.Type != "reg" {
		fail("%q: not a regular file (%s)", pos[1], e.Type)
	}
	fileDigest(r, v, pos[1], e)
	sr, err := r.OpenFile(pos[1])
	if err != nil {
		fail("%v", err)
	}
	whole := make([]byte, e.Size)
	if n, err := sr.ReadAt(whole, 0); int64(n) != e.Size {
		fail("%q: reading: got %d of %d bytes: %v", pos[1], n, e.Size, err)
	}
	if _, err := os.Stdout.Write(whole); err != nil {
		fail("%v", err)
	}
}

// walkTree visits every entry below root depth-first (names unordered, as
// ForeachChild gives them); hardlinked entries are visited once per name.
func walkTree(root *estargz.TOCEntry, visit func(p string, e *estargz.TOCEntry)) {
	var walk func(p string, e *estargz.TOCEntry)
	walk = func(p string, e *estargz.TOCEntry) {
		e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
			cp := base
			if p != "" {
				cp = p + "/" + base
			}
			visit(cp, c)
			if c.Type == "dir" {
				walk(cp, c)
			}
			return true
		})
	}
	walk("", root)
}

// cmdVerify reads every chunk of every regular file once, through the TOC
// verifier, the way a lazy reader does: ReadAt of exactly one chunk, then
// the chunk's verifier. Prints the number of chunks and bytes.
func cmdVerify(args []string) {
	pos, flags := parseArgs(args, map[string]bool{"toc-digest": true})
	if len(pos) != 1 {
		fail("usage: estargz-ref verify BLOB [-toc-digest D]")
	}
	f, r, v := openVerified(pos[0], flags)
	defer f.Close()
	root, ok := r.Lookup("")
	if !ok {
		fail("no root entry")
	}
	seen := map[*estargz.TOCEntry]bool{}
	var chunks, total int64
	var buf []byte
	walkTree(root, func(p string, e *estargz.TOCEntry) {
		if e.Type != "reg" || seen[e] {
			return
		}
		seen[e] = true
		sr, err := r.OpenFile(p)
		if err != nil {
			fail("OpenFile(%q): %v", p, err)
		}
		for off := int64(0); off < e.Size; {
			ce, ok := r.ChunkEntryForOffset(e.Name, off)
			if !ok || ce.ChunkOffset != off || ce.ChunkSize <= 0 {
				fail("%q: no chunk at offset %d", p, off)
			}
			if int64(cap(buf)) < ce.ChunkSize {
				buf = make([]byte, ce.ChunkSize)
			}
			b := buf[:ce.ChunkSize]
			if n, err := sr.ReadAt(b, off); int64(n) != ce.ChunkSize {
				fail("%q: reading chunk at %d: got %d of %d bytes: %v", p, off, n, ce.ChunkSize, err)
			}
			cv, err := v.Verifier(ce)
			if err != nil {
				fail("%q: verifier for chunk at %d: %v", p, off, err)
			}
			cv.Write(b)
			if !cv.Verified() {
				fail("%q: chunk at offset %d failed verification", p, off)
			}
			chunks++
			total += ce.ChunkSize
			off += ce.ChunkSize
		}
	})
	fmt.Printf("OK: %d chunks, %d bytes verified\n", chunks, total)
}

// cmdList opens a blob and walks its whole tree, printing the entry count.
func cmdList(args []string) {
	pos, _ := parseArgs(args, map[string]bool{})
	if len(pos) != 1 {
		fail("usage: estargz-ref list BLOB")
	}
	f, sr := openSection(pos[0])
	defer f.Close()
	r, err := estargz.Open(sr, openOpts...)
	if err != nil {
		fail("open: %v", err)
	}
	root, ok := r.Lookup("")
	if !ok {
		fail("no root entry")
	}
	n := 0
	walkTree(root, func(p string, e *estargz.TOCEntry) { n++ })
	fmt.Println(n)
}
