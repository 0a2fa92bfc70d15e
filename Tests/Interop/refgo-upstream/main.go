// estargz-upstream: builds and reads eStargz with the options Debian's v0.12 reference lacks
// (min chunk size / innerOffset, external TOC, lossless keep-diff-id), over upstream
// containerd/stargz-snapshotter's estargz package v0.14.3 (the first release with all three
// that Go 1.19 builds). Used once to make Tests/Interop/upstream-fixtures and to read our
// blobs by hand; see Tests/Interop/README.md for how to build it.
//
//	build IN.tar OUT [-min-chunk-size N] [-chunk-size N] [-external-toc TOCOUT]   (estargz.Build)
//	lossless IN.tar OUT TOCOUT [-min-chunk-size N]    (Writer.AppendTarLossLess with an external TOC)
//	verify BLOB -toc-digest D [-toc TOCBLOB]           (TOC digest checked, every chunk read through
//	                                                    the reader and checked against its chunkDigest;
//	                                                    prints "NAME SIZE sha256:..." per regular file, sorted)
//
// Upstream's own Reader.Verifiers refuses TOCs where chunks share an offset ("offset N found
// twice", still so at upstream HEAD), i.e. every min-chunk-size layer; so verify checks each
// chunk's SHA-256 against its chunkDigest itself instead of using Verifiers.
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/externaltoc"
	digest "github.com/opencontainers/go-digest"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "estargz-upstream: "+format+"\n", args...)
	os.Exit(1)
}

func flags(args []string) (pos []string, f map[string]string) {
	f = map[string]string{}
	for i := 0; i < len(args); i++ {
		if len(args[i]) > 1 && args[i][0] == '-' && i+1 < len(args) {
			f[args[i][1:]] = args[i+1]
			i++
			continue
		}
		pos = append(pos, args[i])
	}
	return
}

func intFlag(f map[string]string, name string) int {
	if v, ok := f[name]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			fail("-%s %q: %v", name, v, err)
		}
		return n
	}
	return 0
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: build|lossless|verify ...")
	}
	pos, f := flags(os.Args[2:])
	switch os.Args[1] {
	case "build":
		build(pos, f)
	case "lossless":
		lossless(pos, f)
	case "verify":
		verify(pos, f)
	default:
		fail("unknown command %q", os.Args[1])
	}
}

func build(pos []string, f map[string]string) {
	if len(pos) != 2 {
		fail("build IN.tar OUT")
	}
	in, err := os.Open(pos[0])
	if err != nil {
		fail("%v", err)
	}
	st, _ := in.Stat()
	opts := []estargz.Option{estargz.WithMinChunkSize(intFlag(f, "min-chunk-size"))}
	if n := intFlag(f, "chunk-size"); n > 0 {
		opts = append(opts, estargz.WithChunkSize(n))
	}
	var ext *externaltoc.GzipCompression
	if f["external-toc"] != "" {
		ext = externaltoc.NewGzipCompressionWithLevel(nil, 9).(*externaltoc.GzipCompression)
		opts = append(opts, estargz.WithCompression(ext))
	}
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
	if err != nil {
		fail("Build: %v", err)
	}
	out, err := os.Create(pos[1])
	if err != nil {
		fail("%v", err)
	}
	if _, err := io.Copy(out, blob); err != nil {
		fail("copy: %v", err)
	}
	blob.Close()
	out.Close()
	if ext != nil {
		writeTOC(ext, f["external-toc"])
	}
	fmt.Println(blob.TOCDigest())
}

func writeTOC(c *externaltoc.GzipCompression, path string) {
	t, err := os.Create(path)
	if err != nil {
		fail("%v", err)
	}
	if _, err := c.WriteTOCTo(t); err != nil {
		fail("WriteTOCTo: %v", err)
	}
	t.Close()
}

func lossless(pos []string, f map[string]string) {
	if len(pos) != 3 {
		fail("lossless IN.tar OUT TOCOUT")
	}
	in, err := os.Open(pos[0])
	if err != nil {
		fail("%v", err)
	}
	out, err := os.Create(pos[1])
	if err != nil {
		fail("%v", err)
	}
	c := externaltoc.NewGzipCompressionWithLevel(nil, 9).(*externaltoc.GzipCompression)
	w := estargz.NewWriterWithCompressor(out, c)
	w.MinChunkSize = intFlag(f, "min-chunk-size")
	if err := w.AppendTarLossLess(in); err != nil {
		fail("AppendTarLossLess: %v", err)
	}
	d, err := w.Close()
	if err != nil {
		fail("Close: %v", err)
	}
	out.Close()
	writeTOC(c, pos[2])
	fmt.Println(d)
}

func verify(pos []string, f map[string]string) {
	if len(pos) != 1 || f["toc-digest"] == "" {
		fail("verify BLOB -toc-digest D [-toc TOCBLOB]")
	}
	file, err := os.Open(pos[0])
	if err != nil {
		fail("%v", err)
	}
	st, _ := file.Stat()
	sr := io.NewSectionReader(file, 0, st.Size())
	var opts []estargz.OpenOption
	if p := f["toc"]; p != "" {
		toc, err := os.ReadFile(p)
		if err != nil {
			fail("%v", err)
		}
		opts = append(opts, estargz.WithDecompressors(externaltoc.NewGzipDecompressor(func() ([]byte, error) { return toc, nil })))
	}
	r, err := estargz.Open(sr, opts...)
	if err != nil {
		fail("Open: %v", err)
	}
	if got := r.TOCDigest(); got != digest.Digest(f["toc-digest"]) {
		fail("TOC digest %s, want %s", got, f["toc-digest"])
	}
	var lines []string
	var walk func(dir *estargz.TOCEntry, prefix string)
	walk = func(dir *estargz.TOCEntry, prefix string) {
		dir.ForeachChild(func(base string, e *estargz.TOCEntry) bool {
			name := prefix + base
			switch e.Type {
			case "dir":
				walk(e, name+"/")
			case "reg":
				lines = append(lines, fmt.Sprintf("%s %d %s", name, e.Size, fileDigest(r, e.Name, e))) // a hardlink name reads its target
			}
			return true
		})
	}
	root, ok := r.Lookup("")
	if !ok {
		fail("no root")
	}
	walk(root, "")
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
}

// fileDigest reads every chunk of e, checks it against its chunkDigest and returns the SHA-256 of the file.
func fileDigest(r *estargz.Reader, name string, e *estargz.TOCEntry) string {
	sr, err := r.OpenFile(name)
	if err != nil {
		fail("OpenFile %s: %v", name, err)
	}
	h := sha256.New()
	for off := int64(0); off < e.Size; {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok {
			fail("%s: no chunk at %d", name, off)
		}
		buf := make([]byte, ce.ChunkSize)
		if _, err := sr.ReadAt(buf, ce.ChunkOffset); err != nil && err != io.EOF {
			fail("%s: read at %d: %v", name, ce.ChunkOffset, err)
		}
		want := ce.ChunkDigest
		if want == "" {
			want = e.Digest // a single-chunk file without chunkDigest
		}
		if got := digest.FromBytes(buf); got.String() != want {
			fail("%s: chunk at %d is %s, TOC says %s", name, ce.ChunkOffset, got, want)
		}
		h.Write(buf)
		off += ce.ChunkSize
	}
	return fmt.Sprintf("sha256:%x", h.Sum(nil))
}
