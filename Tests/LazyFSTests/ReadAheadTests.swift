import Dispatch
import EStargzCore
import EStargzRemote
@testable import LazyFS
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The host's `env` program: a small dynamically linked ELF executable on every Debian machine.
private let hostProgram = "/usr/bin/env"

private func elf(of bytes: [UInt8]) -> ELFDependencies? {
    ELFDependencies.parse(size: Int64(bytes.count)) { offset, count in
        guard offset >= 0, offset < Int64(bytes.count) else { return nil }
        return Array(bytes[Int(offset) ..< min(bytes.count, Int(offset) + count)])
    }
}

@Suite struct ELFDependenciesTests {
    @Test func readsTheInterpreterAndNeededLibrariesOfARealProgram() throws {
        let program = try readFile(hostProgram)
        let found = try #require(elf(of: program))
        let readelf = try run("/bin/sh", ["-c", "readelf -lWd \(hostProgram)"])
        // What binutils says, line by line.
        let interpreter = readelf.split(separator: "\n").first { $0.contains("Requesting program interpreter") }
            .map { String($0.split(separator: ":", maxSplits: 1)[1].dropLast().trimmingPrefix(" ")) }
        let needed = readelf.split(separator: "\n").filter { $0.contains("(NEEDED)") }
            .map { String($0.split(separator: "[")[1].dropLast()) }
        #expect(found.interpreter == interpreter)
        #expect(found.needed == needed)
        #expect(!needed.isEmpty)
        #expect(found.defaultDirectories.contains("usr/lib"))
    }

    @Test func anythingElseIsNoGuessAndNeverACrash() throws {
        #expect(elf(of: Array("#!/bin/sh\necho hi\n".utf8)) == nil)
        #expect(elf(of: []) == nil)
        let program = try readFile(hostProgram)
        // Every truncation of the headers.
        for length in stride(from: 0, to: min(program.count, 8192), by: 7) { _ = elf(of: Array(program[0 ..< length])) }
        // Bytes of the ELF header and program headers damaged at random.
        var random = SystemRandomNumberGenerator()
        for _ in 0 ..< 3000 {
            var damaged = program
            for _ in 0 ..< Int.random(in: 1 ... 4, using: &random) {
                damaged[Int.random(in: 0 ..< 1024, using: &random)] = UInt8.random(in: 0 ... 255, using: &random)
            }
            if let found = elf(of: damaged) { #expect(found.needed.count < 10_000) }
        }
    }
}

/// A layer file source that records what read-ahead asks for.
final class ReadAheadRecorder: RandomAccessSource {
    let base: FileSource
    let asked = Mutex<[Range<Int64>]>([])
    init(_ base: FileSource) { self.base = base }
    var size: Int64 { base.size }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws { try base.read(into: buffer, at: offset) }
    func readAhead(_ range: Range<Int64>) { asked.withLock { $0.append(range) } }

    /// Whether every chunk of `path` was asked for.
    func covers(_ path: String, in layer: LayerReader) -> Bool {
        guard let entry = layer.entry(at: path) else { return false }
        let ranges = asked.withLock { $0 }
        return layer.chunks(of: entry).allSatisfy { chunk in
            ranges.contains { $0.lowerBound <= chunk.blobOffset && chunk.blobEnd <= $0.upperBound }
        }
    }

    /// Whether any byte of `path` was asked for.
    func touches(_ path: String, in layer: LayerReader) -> Bool {
        guard let entry = layer.entry(at: path) else { return false }
        let ranges = asked.withLock { $0 }
        return layer.chunks(of: entry).contains { chunk in ranges.contains { $0.overlaps(chunk.blobOffset ..< chunk.blobEnd) } }
    }
}

/// A small Debian-like tree: a program (the host's `env`, padded to several chunks), the C library
/// and loader it needs behind usrmerge symlinks, an unrelated library, startup files, and two
/// directories of modules.
enum ProgramLayer {
    static let multiarch = "usr/lib/x86_64-linux-gnu"
    static let modules = (0 ..< 10).map { ("pkg/m\($0).py", noiseBytes(3000, seed: UInt64(101 + 2 * $0))) }

    static func tar() throws -> (tar: [UInt8], program: [UInt8]) {
        let program = try readFile(hostProgram) + [UInt8](repeating: 0, count: 200_000)
        let libc = try readFile("/lib/x86_64-linux-gnu/libc.so.6")
        var b = TarBuilder()
        for directory in ["./", "etc/", "usr/", "usr/bin/", "usr/lib/", multiarch + "/", "usr/lib64/", "pkg/", "other/"] {
            try b.append(header(directory, .directory, mode: 0o755))
        }
        for (name, target) in [("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin"),
                               ("usr/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")] {
            var link = header(name, .symlink, mode: 0o777)
            link.linkName = target
            try b.append(link)
        }
        try b.append(header("etc/passwd", .regular), content: Array("root:x:0:0:root:/root:/bin/sh\n".utf8))
        try b.append(header("etc/group", .regular), content: Array("root:x:0:\n".utf8))
        try b.append(header("etc/hostname", .regular), content: Array("box\n".utf8))
        try b.append(header("etc/ld.so.cache", .regular), content: noiseBytes(5000, seed: 7))
        try b.append(header("usr/bin/prog", .regular, mode: 0o755), content: program)
        try b.append(header("usr/bin/tool", .regular, mode: 0o755), content: noiseBytes(70_000, seed: 39))
        try b.append(header(multiarch + "/libc.so.6", .regular), content: libc)
        try b.append(header(multiarch + "/ld-linux-x86-64.so.2", .regular, mode: 0o755), content: noiseBytes(90_000, seed: 31))
        try b.append(header(multiarch + "/libunused.so.1", .regular), content: noiseBytes(50_000, seed: 33))
        for (path, content) in modules { try b.append(header(path, .regular), content: content) }
        try b.append(header("other/a.py", .regular), content: noiseBytes(3000, seed: 35))
        try b.append(header("other/big.dat", .regular), content: noiseBytes(300_000, seed: 37))
        return (b.finish(), program)
    }
}

@Suite(.serialized, .enabled(if: canMount, "needs root and /dev/fuse")) struct ReadAheadTests {
    /// The program layer, mounted (prefetch off, `configure`d) over a source that records the guesses.
    struct Mounted {
        let directory: TemporaryDirectory
        let mountpoint: String
        let recorder: ReadAheadRecorder
        let layer: LayerReader
        let program: [UInt8]
        let mount: LazyMount
    }

    private func withProgramLayer(_ configure: (inout LazyFileSystem.Options, TemporaryDirectory) -> Void = { _, _ in },
                                  cache: (any ChunkCache)? = nil, in given: TemporaryDirectory? = nil,
                                  _ body: (Mounted) throws -> Void) throws {
        let dir = given ?? TemporaryDirectory()
        let (tar, program) = try ProgramLayer.tar()
        let blob = try convert(tar, in: dir, name: "layer")
        let recorder = ReadAheadRecorder(try FileSource(path: blob))
        let layer = try LayerReader(source: try FileSource(path: blob))
        var options = LazyFileSystem.Options()
        options.prefetch = false
        configure(&options, dir)
        let mountpoint = dir.directory("mnt")
        let fileSystem = try cache.map { try LazyFileSystem(layers: [try LayerReader(source: recorder, cache: $0)], options: options) }
            ?? LazyFileSystem(sources: [recorder], options: options)
        try withMount(fileSystem, at: mountpoint) { mount in
            try body(Mounted(directory: dir, mountpoint: mountpoint, recorder: recorder, layer: layer, program: program, mount: mount))
        }
    }

    /// Polls `condition` for up to five seconds (read-ahead runs beside the reads).
    private func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0 ..< 500 {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    @Test func startupFilesProgramDependenciesAndDirectoriesAreReadAhead() throws {
        // Not the C runtime at mount: here it must come from the program's headers.
        try withProgramLayer({ options, _ in options.readAhead.startupFiles = ["etc/passwd", "etc/group"] }) { m in
            let (recorder, layer) = (m.recorder, m.layer)
            // At mount: what the runtime reads to start a container, and nothing else.
            #expect(recorder.covers("etc/passwd", in: layer))
            #expect(recorder.covers("etc/group", in: layer))
            #expect(!recorder.touches("etc/hostname", in: layer))
            #expect(!recorder.touches("usr/bin/prog", in: layer))

            // The first executable looked up (what runc does with the entrypoint before it execs it):
            // all of it, then its loader, libc (through the usrmerge symlinks), what libc needs,
            // and the loader's cache. Only the first one.
            var info = stat()
            #expect(stat(m.mountpoint + "/usr/bin/prog", &info) == 0)
            #expect(stat(m.mountpoint + "/usr/bin/tool", &info) == 0)
            let programEntry = try #require(layer.entry(at: "usr/bin/prog"))
            #expect(layer.chunks(of: programEntry).count > 1)
            #expect(eventually { recorder.covers("usr/bin/prog", in: layer) })
            #expect(eventually { recorder.covers(ProgramLayer.multiarch + "/libc.so.6", in: layer) })
            #expect(eventually { recorder.covers(ProgramLayer.multiarch + "/ld-linux-x86-64.so.2", in: layer) })
            #expect(eventually { recorder.covers("etc/ld.so.cache", in: layer) })
            #expect(!recorder.touches(ProgramLayer.multiarch + "/libunused.so.1", in: layer))
            #expect(!recorder.touches("usr/bin/tool", in: layer))
            #expect(readRange(m.mountpoint + "/usr/bin/prog", offset: 0, count: m.program.count + 1) == .success(m.program))

            // A directory read file by file: two files are not a pattern yet, the third is.
            for (path, content) in ProgramLayer.modules[0 ..< 2] {
                #expect(readRange(m.mountpoint + "/" + path, offset: 0, count: 4096) == .success(content))
            }
            #expect(!ProgramLayer.modules[2...].contains { recorder.touches($0.0, in: layer) })
            #expect(readRange(m.mountpoint + "/pkg/m2.py", offset: 0, count: 4096) == .success(ProgramLayer.modules[2].1))
            #expect(eventually { ProgramLayer.modules[3...].allSatisfy { recorder.covers($0.0, in: layer) } })
            // One file of a directory is not a pattern.
            #expect(readRange(m.mountpoint + "/other/a.py", offset: 0, count: 10) != .failure(Errno(EIO)))
            #expect(!recorder.touches("other/big.dat", in: layer))
            // Everything read ahead still reads right (and is verified on the way).
            for (path, content) in ProgramLayer.modules {
                #expect(readRange(m.mountpoint + "/" + path, offset: 0, count: 4096) == .success(content))
            }
        }
    }

    /// Without the first-program guess, reading a program's first chunk is what starts it.
    @Test func readingAProgramsHeaderReadsAheadItsLibraries() throws {
        try withProgramLayer({ options, _ in
            options.readAhead.firstProgram = false
            options.readAhead.startupFiles = []
        }) { m in
            var info = stat()
            #expect(stat(m.mountpoint + "/usr/bin/prog", &info) == 0)
            usleep(200_000)
            #expect(!m.recorder.touches("usr/bin/prog", in: m.layer))
            #expect(readRange(m.mountpoint + "/usr/bin/prog", offset: 0, count: 64) == .success(Array(m.program[0 ..< 64])))
            #expect(eventually { m.recorder.covers("usr/bin/prog", in: m.layer) })
            #expect(eventually { m.recorder.covers(ProgramLayer.multiarch + "/libc.so.6", in: m.layer) })
            #expect(!m.recorder.touches(ProgramLayer.multiarch + "/libunused.so.1", in: m.layer))
        }
    }

    /// The defaults read the C runtime ahead at mount, before any program runs.
    @Test func theCRuntimeIsReadAheadAtMount() throws {
        try withProgramLayer { m in
            for path in ["etc/passwd", "etc/group", "etc/ld.so.cache", ProgramLayer.multiarch + "/libc.so.6",
                         ProgramLayer.multiarch + "/ld-linux-x86-64.so.2"] {
                #expect(m.recorder.covers(path, in: m.layer), "\(path)")
            }
            #expect(!m.recorder.touches("usr/bin/prog", in: m.layer))
            #expect(!m.recorder.touches(ProgramLayer.multiarch + "/libunused.so.1", in: m.layer))
            let asked = m.recorder.asked.withLock { $0.reduce(Int64(0)) { $0 + Int64($1.count) } }
            #expect(m.mount.statistics.readAheadBytes == asked)
            #expect(asked > 0)
        }
    }

    /// One layer per mount (overlayfs lower directories): a program in the upper layer whose loader
    /// and libraries are in the layer below has them read ahead there.
    @Test func aProgramsLibrariesAreReadAheadInTheLayersBelow() throws {
        let dir = TemporaryDirectory()
        let (lowerTar, program) = try ProgramLayer.tar()
        var upper = TarBuilder()
        for directory in ["./", "usr/", "usr/bin/"] { try upper.append(header(directory, .directory, mode: 0o755)) }
        try upper.append(header("usr/bin/app", .regular, mode: 0o755), content: program)
        let lowerBlob = try convert(lowerTar, in: dir, name: "lower"), upperBlob = try convert(upper.finish(), in: dir, name: "upper")
        let lowerRecorder = ReadAheadRecorder(try FileSource(path: lowerBlob))
        let upperRecorder = ReadAheadRecorder(try FileSource(path: upperBlob))
        let lowerLayer = try LayerReader(source: try FileSource(path: lowerBlob))
        var options = LazyFileSystem.Options()
        options.prefetch = false
        options.readAhead.startupFiles = []
        let lowerFS = try LazyFileSystem(sources: [lowerRecorder], mode: .overlayLayer, options: options)
        let upperFS = try LazyFileSystem(sources: [upperRecorder], mode: .overlayLayer, options: options)
        upperFS.readAheadAlso { [lowerFS] }
        try withMount(lowerFS, at: dir.directory("lower")) { _ in
            try withMount(upperFS, at: dir.directory("upper")) { _ in
                var info = stat()
                #expect(stat(dir.path + "/upper/usr/bin/app", &info) == 0)
                #expect(eventually { lowerRecorder.covers(ProgramLayer.multiarch + "/libc.so.6", in: lowerLayer) })
                #expect(eventually { lowerRecorder.covers(ProgramLayer.multiarch + "/ld-linux-x86-64.so.2", in: lowerLayer) })
                #expect(!lowerRecorder.touches(ProgramLayer.multiarch + "/libunused.so.1", in: lowerLayer))
                #expect(!lowerRecorder.touches("usr/bin/prog", in: lowerLayer))
                #expect(!upperRecorder.asked.withLock { $0.isEmpty })
            }
        }
    }

    /// The program an image's config names is read ahead when the config is known, before any
    /// lookup or read: the first of the paths this layer has as an executable (symlinks followed),
    /// with its libraries; paths it does not have, or not as an executable, are no guess.
    @Test func theImagesProgramIsReadAheadBeforeAnyLookup() throws {
        try withProgramLayer({ options, _ in options.readAhead.startupFiles = [] }) { m in
            let fileSystem = m.mount.fileSystem
            #expect(!fileSystem.readAheadProgram(atAnyOf: ["usr/local/bin/prog", "sbin/prog"]))
            #expect(!fileSystem.readAheadProgram(atAnyOf: ["etc/passwd", "usr/bin"]))
            usleep(100_000)
            #expect(m.recorder.asked.withLock { $0.isEmpty })
            // As ImageProcess.programPaths gives them for Cmd ["prog"]; bin is a symlink to usr/bin.
            #expect(fileSystem.readAheadProgram(atAnyOf: ["usr/local/bin/prog", "bin/prog", "usr/bin/tool"]))
            #expect(eventually { m.recorder.covers("usr/bin/prog", in: m.layer) })
            #expect(eventually { m.recorder.covers(ProgramLayer.multiarch + "/libc.so.6", in: m.layer) })
            #expect(eventually { m.recorder.covers("etc/ld.so.cache", in: m.layer) })
            #expect(!m.recorder.touches("usr/bin/tool", in: m.layer))
            #expect(readRange(m.mountpoint + "/bin/prog", offset: 0, count: m.program.count + 1) == .success(m.program))
        }
        try withProgramLayer({ options, _ in options.readAhead = .off }) { m in
            #expect(!m.mount.fileSystem.readAheadProgram(atAnyOf: ["usr/bin/prog"]))
            usleep(100_000)
            #expect(m.recorder.asked.withLock { $0.isEmpty })
        }
    }

    /// What a cache holds, on disk too, is not guessed at again: a second mount over a warm disk
    /// cache asks its source only for what no read brought before.
    @Test func whatTheCacheHoldsIsNotFetchedAgain() throws {
        let dir = TemporaryDirectory()
        let disk = try DiskChunkCache(directory: dir.directory("chunks"), capacity: 64 << 20)
        let libc = ProgramLayer.multiarch + "/libc.so.6"
        try withProgramLayer({ options, _ in options.readAhead = .off }, cache: MemoryChunkCache(capacity: 64 << 20, backing: disk), in: dir) { m in
            // Read whole: the program and libc (their verified chunks go to the disk cache).
            #expect(readRange(m.mountpoint + "/usr/bin/prog", offset: 0, count: m.program.count) == .success(m.program))
            let libcBytes = try readFile("/lib/x86_64-linux-gnu/libc.so.6")
            #expect(readRange(m.mountpoint + "/" + libc, offset: 0, count: libcBytes.count + 1) == .success(libcBytes))
        }
        // A fresh memory tier over the same disk: only the loader and ld.so.cache are asked for.
        try withProgramLayer({ options, _ in options.readAhead.startupFiles = [] }, cache: MemoryChunkCache(capacity: 64 << 20, backing: disk),
                             in: dir) { m in
            #expect(m.mount.fileSystem.readAheadProgram(atAnyOf: ["usr/bin/prog"]))
            #expect(eventually { m.recorder.covers(ProgramLayer.multiarch + "/ld-linux-x86-64.so.2", in: m.layer) })
            #expect(eventually { m.recorder.covers("etc/ld.so.cache", in: m.layer) })
            #expect(!m.recorder.touches("usr/bin/prog", in: m.layer))
            #expect(!m.recorder.touches(libc, in: m.layer))
            #expect(readRange(m.mountpoint + "/usr/bin/prog", offset: 0, count: m.program.count) == .success(m.program))
        }
    }

    @Test func offGuessesNothing() throws {
        try withProgramLayer({ options, _ in options.readAhead = .off }) { m in
            #expect(readRange(m.mountpoint + "/usr/bin/prog", offset: 0, count: m.program.count) == .success(m.program))
            for (path, content) in ProgramLayer.modules[0 ..< 5] {
                #expect(readRange(m.mountpoint + "/" + path, offset: 0, count: 4096) == .success(content))
            }
            usleep(200_000)
            #expect(m.recorder.asked.withLock { $0.isEmpty })
            #expect(m.mount.statistics.readAheadBytes == 0)
        }
    }

    @Test func aGuessIsNeverAnAccessOrAReadError() throws {
        try withProgramLayer({ options, dir in options.accessLogPath = dir.file("access.log") }) { m in
            #expect(readRange(m.mountpoint + "/usr/bin/prog", offset: 0, count: 64).map(\.count) == .success(64))
            usleep(300_000)  // the libraries' headers are read by then
            let accesses = try readFile(m.directory.file("access.log"))
            #expect(String(decoding: accesses, as: UTF8.self) == "usr/bin/prog\n")
            #expect(m.mount.statistics.reads >= 1)
            #expect(m.mount.statistics.readErrors == 0)
        }
    }
}
