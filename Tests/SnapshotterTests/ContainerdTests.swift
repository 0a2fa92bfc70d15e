import EStargzCore
import EStargzRemote
import Foundation
@testable import Snapshotter
import TestSupport
import Testing

/// containerd (started as a plain process, as the snapshotter's users run it) using our snapshotter
/// as a proxy plugin: import an image, run a container, restart the snapshotter and run again.
@Suite(.serialized) struct ContainerdTests {
    @Test func containerdRunsContainersOnOurSnapshots() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        try environment.startSnapshotter()
        try environment.startContainerd()

        try environment.ctr(["images", "import", "--snapshotter", "estargz", environment.imageArchive])
        let first = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", environment.image, "c1",
                                         "/bin/cat", "/etc/message"])
        #expect(first == "hello from the layer\n")

        // The snapshotter keeps its state across a restart: the committed layer is reused.
        try environment.stopSnapshotter()
        try environment.startSnapshotter()
        let second = try environment.ctrRetrying(["run", "--rm", "--snapshotter", "estargz", environment.image, "c2",
                                          "/bin/sh", "-c", "echo written > /tmp/x && cat /tmp/x /etc/message"])
        #expect(second == "written\nhello from the layer\n")
        let snapshots = try environment.ctr(["snapshots", "--snapshotter", "estargz", "ls"])
        #expect(snapshots.contains("Committed"))
    }
}

extension ContainerdTests {
    /// The remote-snapshot path: an eStargz image in a real registry, pulled with `estargz pull`:
    /// the layer is mounted lazily (nothing downloaded) and a container runs on it.
    /// A program in the image's top layer whose libraries are all in the layer below: read-ahead
    /// in the program's layer finds them there (the snapshotter tells each lazy layer where the
    /// layers below it are mounted) and the lower layer fetches them before the loader asks.
    @Test func aProgramsLibrariesAreReadAheadInTheLayerBelow() throws {
        let environment = try ContainerdEnvironment(program: "/usr/bin/zstd")
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        let reference = "127.0.0.1:\(registry)/bbtest:program"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + (try environment.imageLayout()), reference])
        try environment.startSnapshotter()
        try environment.startContainerd()
        _ = try environment.pull(reference)
        // The first layer's mount: the one with busybox.
        let base = try #require(try environment.lazyMounts().first { FileManager.default.fileExists(atPath: $0 + "/bin/busybox") })
        func readAheadBytes() throws -> Int64 { try ContainerdEnvironment.readAheadBytes(of: base) }
        let atMount = try readAheadBytes()  // the C runtime, read ahead when the layer was mounted
        #expect(atMount > 0)
        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "prog1", "/usr/bin/zstd", "--version"])
        #expect(output.contains("Zstandard"), "\(output)")
        // libz, liblzma and liblz4 (460 KB, none of them the C runtime) were guessed in the lower layer.
        let guessed = try readAheadBytes() - atMount
        #expect(guessed > 100_000, "read ahead in the base layer after the run: \(guessed) B more than at mount")
    }

    /// The program the image's config names (Cmd `zstd`, found in its PATH) is read ahead from the
    /// pull, in the layer that has it, and its libraries in the layer below: before any container
    /// of the image is created.
    @Test func theImagesProgramIsReadAheadFromThePull() throws {
        let environment = try ContainerdEnvironment(program: "/usr/bin/zstd",
                                                    process: #"{"Cmd":["zstd","--version"],"Env":["PATH=/usr/local/bin:/usr/bin:/bin"]}"#)
        defer { environment.tearDown() }
        let registry = try environment.startRegistry(logAccess: true)
        let reference = "127.0.0.1:\(registry)/bbtest:cmd"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + (try environment.imageLayout()), reference])
        try environment.startSnapshotter()
        try environment.startContainerd()
        _ = try environment.pull(reference)
        let mounts = try environment.lazyMounts()
        // Told apart by looking up no executable: the first one looked up on a mount is read ahead anyway.
        func layer(having path: String, without other: String) throws -> String {
            try #require(mounts.first {
                FileManager.default.fileExists(atPath: $0 + "/" + path) && !FileManager.default.fileExists(atPath: $0 + "/" + other)
            })
        }
        let readAheadBytes = ContainerdEnvironment.readAheadBytes(of:)
        let top = try layer(having: "usr/bin", without: "etc"), base = try layer(having: "etc/message", without: "usr/bin")
        // The top layer holds the program alone (nothing there is a startup file): what it reads
        // ahead is the program. Nothing has looked the program up or read it yet.
        let programSize = fileSize("/usr/bin/zstd")
        var program: Int64 = 0
        for _ in 0 ..< 100 {
            program = try readAheadBytes(top)
            if program >= programSize / 3 { break }
            usleep(100_000)
        }
        #expect(program >= programSize / 3, "read ahead in the program's layer: \(program) B of a \(programSize) B program")
        // Once the registry is quiet, loading the program reads nothing more from it: the program
        // and its libraries (libz, liblzma, liblz4, in the base layer) are all here.
        let registryLog = try #require(environment.registry)
        var served = registryLog.blobBytesServed()
        for _ in 0 ..< 50 {
            usleep(300_000)
            let now = registryLog.blobBytesServed()
            if now == served { break }
            served = now
        }
        for path in [top + "/usr/bin/zstd"] + ["libz.so.1", "liblzma.so.5", "liblz4.so.1"].map({ base + "/lib/x86_64-linux-gnu/" + $0 }) {
            #expect(FileManager.default.contents(atPath: path) != nil, "\(path)")
        }
        #expect(registryLog.blobBytesServed() == served, "bytes fetched to read the program and its libraries")
        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "cmd1"])
        #expect(output.contains("Zstandard"), "\(output)")
    }

    @Test func pullMountsEStargzLayersLazily() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        // Our converter turns the gzip image into eStargz and pushes it.
        let layout = try environment.imageLayout()
        let reference = "127.0.0.1:\(registry)/bbtest:esgz"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference])

        try environment.startSnapshotter()
        try environment.startContainerd()
        let progress = try environment.pull(reference)
        #expect(progress.contains("mounted lazily by estargz"), "\(progress)")
        // The layer's snapshot is a lazy FUSE mount below the snapshotter's root.
        let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        #expect(mounts.split(separator: "\n").contains { $0.contains(environment.directory + "/snapshotter/snapshots/") && $0.contains("fuse") })
        let info = try environment.ctr(["snapshots", "--snapshotter", "estargz", "ls"])
        #expect(info.contains("Committed"))
        // Usage of the lazy layer: the layer as if extracted, from its TOC (nothing fetched for it):
        // the root, 6 directories, 4 files and 4 symlinks; busybox + 21 + 30 + 256 KiB bytes.
        let usage = try environment.ctr(["snapshots", "--snapshotter", "estargz", "usage"])
        let row = try #require(usage.split(separator: "\n").dropFirst().first).split(whereSeparator: \.isWhitespace)
        #expect(row.last == "15", "\(usage)")
        let size = fileSize("/bin/busybox") + 21 + 30 + 256 * 1024
        #expect(row.dropFirst().dropLast().joined(separator: " ") == ContainerdEnvironment.humanBytes(size), "\(usage)")

        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "lazy1", "/bin/cat", "/etc/message"])
        #expect(output == "hello from the layer\n")

        // A plain gzip image through the same path: not eStargz, so it is downloaded and unpacked.
        let plain = "127.0.0.1:\(registry)/bbtest:gzip"
        try TestSupport.run("/usr/bin/skopeo", ["copy", "--dest-tls-verify=false", "oci:" + layout, "docker://" + plain])
        let gzipProgress = try environment.pull(plain)
        #expect(gzipProgress.contains("downloaded") && !gzipProgress.contains("lazily"), "\(gzipProgress)")
        let fromGzip = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", plain, "plain1", "/bin/cat", "/etc/message"])
        #expect(fromGzip == "hello from the layer\n")

        // After a restart of the snapshotter the lazy layer is mounted again, with no guesses at
        // mount: it is not being pulled for a container about to start (it read etc/passwd and the
        // image's program ahead the first time).
        let mounted = try environment.lazyMounts()
        #expect(mounted.count == 1)
        for mount in mounted { #expect(try ContainerdEnvironment.readAheadBytes(of: mount) > 0) }
        try environment.stopSnapshotter()
        try environment.startSnapshotter()
        let remounted = try environment.lazyMounts()
        #expect(remounted.count == mounted.count)
        usleep(300_000)
        for mount in remounted { #expect(try ContainerdEnvironment.readAheadBytes(of: mount) == 0, "\(mount)") }
        let again = try environment.ctrRetrying(["run", "--rm", "--snapshotter", "estargz", reference, "lazy2", "/bin/cat", "/etc/message"])
        #expect(again == "hello from the layer\n")
    }
}

extension ContainerdTests {
    /// `estargz pull` of a two-layer eStargz image: both layers are mounted lazily (the second on
    /// the first), a container reads a file of each, and the registry serves a small part of the
    /// image's bytes. A second pull finds the snapshots there.
    @Test func pullFetchesASmallPartOfTheImage() throws {
        let environment = try ContainerdEnvironment(dataLayer: true)
        defer { environment.tearDown() }
        let port = try environment.startRegistry(logAccess: true)
        let layout = try environment.imageLayout()
        let reference = "127.0.0.1:\(port)/bbdata:esgz"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference])
        let imageBytes = try environment.registryBytes()
        let registry = try #require(environment.registry)
        let pushed = registry.blobBytesServed()
        try environment.startSnapshotter()
        // No containerd yet: a typed error that names the call, and no partial image.
        let refused = shell("'\(environment.estargz)' pull --address '\(environment.directory)/containerd.sock' \(reference) 2>'\(environment.directory)/err'")
        let refusal = (try? String(contentsOfFile: environment.directory + "/err", encoding: .utf8)) ?? ""
        #expect(refused == 1 && refusal.contains("containerd Leases.Create: unavailable"), "\(refusal)")
        try environment.startContainerd()

        let progress = try environment.pull(reference)
        #expect(progress.components(separatedBy: "mounted lazily by estargz").count == 3, "\(progress)")
        #expect(progress.contains("done: \(reference)"), "\(progress)")
        #expect(try environment.ctr(["images", "ls", "-q"]).split(separator: "\n").contains(Substring(reference)))
        // containerd's garbage collector, run now (deleting a lease with --sync waits for it), keeps
        // what the image's labels refer to: manifest, config and both snapshots.
        let lease = try environment.ctr(["leases", "create"]).trimmingCharacters(in: .whitespacesAndNewlines)
        try environment.ctr(["leases", "delete", "--sync", lease])
        #expect(try environment.ctr(["content", "ls", "-q"]).split(separator: "\n").count == 2)
        #expect(try environment.ctr(["snapshots", "--snapshotter", "estargz", "ls"]).components(separatedBy: "Committed").count == 3)
        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "data1",
                                          "/bin/cat", "/etc/message", "/etc/second"])
        #expect(output == "hello from the layer\nhello from the second layer\n")
        let fetched = registry.blobBytesServed() - pushed
        print("estargz pull + ctr run (our eStargz image): \(fetched) of \(imageBytes) registry bytes fetched")
        #expect(fetched > 0 && fetched < imageBytes / 3, "fetched \(fetched) of \(imageBytes) bytes")

        let again = try environment.pull(reference)
        #expect(again.components(separatedBy: ": exists").count == 3, "\(again)")
        #expect(registry.blobBytesServed() - pushed < fetched + 4096, "a second pull fetches the config again, no layer bytes")

        // The same image as plain gzip: both layers downloaded and applied by containerd's diff
        // service, the second onto an overlay of the first.
        let plain = "127.0.0.1:\(port)/bbdata:gzip"
        try TestSupport.run("/usr/bin/skopeo", ["copy", "--dest-tls-verify=false", "oci:" + layout, "docker://" + plain])
        let downloaded = try environment.pull(plain)
        #expect(downloaded.components(separatedBy: "and applied").count == 3 && !downloaded.contains("lazily"), "\(downloaded)")
        let fromGzip = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", plain, "data2",
                                            "/bin/cat", "/etc/message", "/etc/second"])
        #expect(fromGzip == "hello from the layer\nhello from the second layer\n")
    }

    /// Interop: an image made by `ctr-remote image convert --estargz --oci` and pushed with `ctr`
    /// is pulled lazily by `estargz pull` (into another namespace, away from the converted copy's
    /// content) and runs with a small part of its bytes fetched.
    @Test func pullOfACtrRemoteConvertedImage() throws {
        let environment = try ContainerdEnvironment(dataLayer: true)
        defer { environment.tearDown() }
        let port = try environment.startRegistry(logAccess: true)
        try environment.startSnapshotter()
        try environment.startContainerd()
        try environment.ctr(["images", "import", "--no-unpack", environment.imageArchive])
        let reference = "127.0.0.1:\(port)/bbdata:ctr-remote-esgz"
        try environment.ctrRemote(["image", "convert", "--estargz", "--oci", environment.image, reference])
        try environment.ctr(["images", "push", "--plain-http", reference])
        let imageBytes = try environment.registryBytes()
        let registry = try #require(environment.registry)
        let pushed = registry.blobBytesServed()

        let progress = try environment.pull(reference, namespace: "pulled")
        #expect(progress.components(separatedBy: "mounted lazily by estargz").count == 3, "\(progress)")
        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "data2",
                                          "/bin/cat", "/etc/message", "/etc/second"], namespace: "pulled")
        #expect(output == "hello from the layer\nhello from the second layer\n")
        let fetched = registry.blobBytesServed() - pushed
        print("estargz pull + ctr run (ctr-remote image): \(fetched) of \(imageBytes) registry bytes fetched")
        #expect(fetched > 0 && fetched < imageBytes / 3, "fetched \(fetched) of \(imageBytes) bytes")
    }
}

extension ContainerdTests {
    /// A flipped byte in one file's chunk, in the registry's copy of the layer: inside the container
    /// that file fails with EIO, the others read fine.
    @Test func corruptChunkIsAnIOErrorInsideTheContainer() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        let layout = try environment.imageLayout()
        let reference = "127.0.0.1:\(registry)/bbtest:corrupt"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference])

        let layer = try environment.largestBlob().path
        let reader = try LayerReader(source: try FileSource(path: layer))
        let random = try #require(reader.entry(at: "etc/random"))
        let chunk = try #require(reader.chunks(of: random).first)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: layer))
        try handle.seek(toOffset: UInt64(chunk.blobOffset + (chunk.blobEnd - chunk.blobOffset) / 2))
        let original = try handle.read(upToCount: 1)
        let byte = try #require(original?.first)
        try handle.seek(toOffset: UInt64(chunk.blobOffset + (chunk.blobEnd - chunk.blobOffset) / 2))
        try handle.write(contentsOf: [byte ^ 0x5a])
        try handle.close()

        try environment.startSnapshotter()
        try environment.startContainerd()
        try environment.pull(reference)
        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "corrupt1", "/bin/sh", "-c",
                                          "cat /etc/message; cat /etc/random > /dev/null 2>/tmp/err; echo status=$?; cat /tmp/err"])
        #expect(output.hasPrefix("hello from the layer\n"), "other files still read: \(output)")
        #expect(output.contains("status=1"), "reading the corrupt file must fail: \(output)")
        #expect(output.lowercased().contains("input/output error"), "\(output)")
    }
}

extension ContainerdTests {
    /// `estargz image optimize`: the files the workload reads end up before the prefetch landmark.
    @Test func optimizePrioritizesWhatTheWorkloadReads() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let layout = try environment.imageLayout()
        let output = environment.directory + "/optimized"
        try TestSupport.run(environment.estargz, ["image", "optimize", "oci:" + layout, "oci:" + output + ":opt",
                                                            "--period", "20", "--", "/bin/cat", "/etc/message"])
        try expectPrioritized(layout: output)
    }

    /// `estargz image optimize` between registries: SRC a plain gzip image in a registry, DST a new
    /// tag there; what the registry then serves is the optimized eStargz image.
    @Test func optimizeReadsFromAndPushesToARegistry() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        let layout = try environment.imageLayout()
        let source = "127.0.0.1:\(registry)/bbtest:gzip"
        let destination = "127.0.0.1:\(registry)/bbopt:optimized"
        try TestSupport.run("/usr/bin/skopeo", ["copy", "--dest-tls-verify=false", "oci:" + layout, "docker://" + source])
        try TestSupport.run(environment.estargz, ["image", "optimize", source, destination,
                                                            "--period", "20", "--", "/bin/cat", "/etc/message"])
        // The source tag is untouched: still the one gzip layer skopeo pushed.
        let inspected = try TestSupport.run(environment.estargz, ["image", "inspect", source])
        #expect(!inspected.contains("toc.digest"), "\(inspected)")
        // Fetch what the registry serves under the destination tag, as a layout, and check it.
        let fetched = environment.directory + "/fetched"
        try TestSupport.run("/usr/bin/skopeo", ["copy", "--src-tls-verify=false", "docker://" + destination, "oci:" + fetched + ":opt"])
        try expectPrioritized(layout: fetched)
        let verified = try TestSupport.run(environment.estargz, ["ls", destination])
        #expect(verified.contains("etc/message"))
    }

    /// The layout's one layer is eStargz whose prefetch region holds exactly the workload's files.
    private func expectPrioritized(layout output: String, compression: LayerCompression = .gzip) throws {
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/index.json"))) as? [String: Any]
        let manifestDigest = try #require(((index?["manifests"] as? [[String: Any]])?.last?["digest"] as? String)?.dropFirst(7))
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/blobs/sha256/" + manifestDigest))) as? [String: Any]
        let layerDigest = try #require(((manifest?["layers"] as? [[String: Any]])?.first?["digest"] as? String)?.dropFirst(7))
        let layer = try LayerReader(source: try FileSource(path: output + "/blobs/sha256/" + layerDigest))
        #expect(layer.compression == compression)
        #expect((manifest?["layers"] as? [[String: Any]])?.first?["mediaType"] as? String == compression.mediaType)
        let end = try #require(layer.prefetchRegionEnd)
        // What the workload read, and etc/passwd, which the runtime reads to start any container.
        for path in ["etc/message", "bin/busybox", "etc/passwd"] {
            let entry = try #require(layer.entry(at: path))
            #expect(layer.chunks(of: entry).allSatisfy { $0.blobEnd <= end }, "\(path) should be prefetched")
        }
        let random = try #require(layer.entry(at: "etc/random"))
        #expect(layer.chunks(of: random).allSatisfy { $0.blobOffset > end }, "etc/random was not read by the workload")
        #expect(!(try String(contentsOfFile: "/proc/mounts", encoding: .utf8)).contains("estargz-optimize"))
    }
}

extension ContainerdTests {
    /// A lazy layer's prioritized region is streamed ahead, at most 1 MiB per request and nothing
    /// beyond it; the prioritized files then read without another request.
    @Test func prioritizedRegionIsFetchedAheadInMebibytePieces() async throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        let layout = try environment.imageLayout()
        let list = environment.directory + "/prioritized"
        try "bin/busybox\netc/message\n".write(toFile: list, atomically: true, encoding: .utf8)
        let reference = "127.0.0.1:\(registry)/bbtest:prioritized"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference, "--prioritized-files", list])
        let (_, digest) = try environment.largestBlob()

        let client = RegistryClient()
        var options = RangeReader.Options()
        options.blockSize = 32 << 10
        let reader = try await RangeReader.open(client: client, repository: try ImageReference(parsing: reference), digest: digest,
                                                options: options)
        let layer = try LayerReader(source: reader)
        let end = try #require(layer.prefetchRegionEnd)
        let random = try #require(layer.entry(at: "etc/random"))
        #expect(layer.chunks(of: random).allSatisfy { $0.blobOffset >= end }, "etc/random is not prioritized")
        let before = reader.statistics
        await RemoteLayers.fetchAhead(reader, upTo: end).value
        let after = reader.statistics
        let requests = after.requests - before.requests
        #expect(requests >= 1)
        #expect(after.bytesFetched - before.bytesFetched <= requests * ((1 << 20) + (32 << 10)), "pieces of at most 1 MiB: \(before) → \(after)")

        #expect(try layer.read(path: "bin/busybox") == Array(try Data(contentsOf: URL(fileURLWithPath: "/bin/busybox"))))
        #expect(try layer.read(path: "etc/message") == Array("hello from the layer\n".utf8))
        #expect(reader.statistics.requests == after.requests, "prioritized files read from what was fetched ahead")
        #expect(after.bytesFetched - before.bytesFetched <= end + (32 << 10), "nothing beyond the region")
        #expect(try layer.read(path: "etc/random").count == 256 * 1024)
        try await client.shutdown()
    }

    /// The kernel reads a lazily mounted file a slice at a time (128 KiB–1 MiB of a 4 MiB chunk):
    /// once a chunk is verified, every further slice comes from memory with one copy, not from the
    /// disk cache (which would read and hash the whole chunk again for each slice).
    @Test func slicesOfAVerifiedChunkAreServedFromMemory() async throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        let layout = try environment.imageLayout()
        let reference = "127.0.0.1:\(registry)/bbtest:slices"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference])
        let (layerPath, digest) = try environment.largestBlob()
        let toc = try LayerReader(source: try FileSource(path: layerPath)).tocDigest

        let remote = try RemoteLayers(cacheDirectory: environment.directory + "/chunks", prefetch: false)
        let mountpoint = environment.directory + "/lazy"
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        // Whatever happens below, unmount and close the registry client before returning.
        let outcome = Result { () throws -> Void in
            try remote.mount(labels: [RemoteLabel.imageReference: reference, RemoteLabel.layerDigest: digest,
                                      RemoteLabel.tocDigest: toc.description], at: mountpoint)

            let expected = Array(try Data(contentsOf: URL(fileURLWithPath: "/bin/busybox")))
            #expect(expected.count > 512 << 10, "busybox spans several kernel reads")
            func readUncached() throws -> [UInt8] {
                // Drop the file's pages so every byte is asked of the mount again.
                let fd = open(mountpoint + "/bin/busybox", O_RDONLY)
                #expect(fd >= 0)
                defer { close(fd) }
                _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
                var bytes: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 64 << 10)
                while true {
                    let count = read(fd, &buffer, buffer.count)
                    #expect(count >= 0)
                    if count <= 0 { break }
                    bytes += buffer[0 ..< count]
                }
                return bytes
            }
            #expect(try readUncached() == expected)
            let first = remote.memoryCacheCounts
            #expect(try readUncached() == expected)
            let second = remote.memoryCacheCounts
            #expect(second.misses == first.misses, "no slice went to the disk cache again: \(first) → \(second)")
            #expect(second.hits > first.hits, "the second pass was served from memory: \(first) → \(second)")
        }
        await remote.shutdown()
        try outcome.get()
    }
}

func fileSize(_ path: String) -> Int64 {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int64) ?? 0
}

/// Temporary containerd + snapshotter, torn down whatever happens.
final class ContainerdEnvironment {
    let directory: String
    let packageRoot: String
    let image = "docker.io/library/bbtest:latest"
    var imageArchive: String { directory + "/image.tar" }
    private(set) var snapshotter: Process?
    private var containerd: Process?
    /// TOML appended to containerd's config.
    private let containerdConfig: String

    /// With `dataLayer`, the image has a second layer holding 4 MiB no container reads.
    /// `dataFiles`: the image's first layer also holds data/f000 … (make_busybox_image.py --data-files).
    /// `containerdConfig`: TOML appended to containerd's config.
    /// `rootfsTar`: the image's one layer is this rootfs instead (make_rootfs_image.py).
    /// `program`: a host program in a top layer of its own, its libraries in the first (make_busybox_image.py --program).
    /// `process`: the image config's `config` object (JSON: Entrypoint, Cmd, Env, …; make_busybox_image.py --config).
    init(dataLayer: Bool = false, dataFiles: Int = 0, rootfsTar: String? = nil, program: String? = nil, process: String? = nil,
         containerdConfig: String = "") throws {
        self.containerdConfig = containerdConfig
        directory = "/tmp/estargz-containerd-\(UUID().uuidString.prefix(8))"
        packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for tool in ["/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", "/bin/busybox", "/usr/bin/ctr-remote", "/usr/bin/docker-registry", "/usr/bin/skopeo"] where !FileManager.default.fileExists(atPath: tool) {
            throw ContainerdTestError("\(tool) is missing: install containerd, runc, busybox-static, stargz-snapshotter and docker-registry (scripts/setup.sh does)")
        }
        if let rootfsTar {
            try TestSupport.run("/usr/bin/python3", [packageRoot + "/Tests/SnapshotterTests/Fixtures/make_rootfs_image.py", rootfsTar,
                                                     imageArchive, "bbtest"])
        } else {
            try TestSupport.run("/usr/bin/python3", [packageRoot + "/Tests/SnapshotterTests/Fixtures/make_busybox_image.py", imageArchive, "bbtest"]
                                + (dataLayer ? ["--data-layer"] : []) + (dataFiles > 0 ? ["--data-files", String(dataFiles)] : [])
                                + (program.map { ["--program", $0] } ?? []) + (process.map { ["--config", $0] } ?? []))
        }
    }

    var estargz: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/estargz"
        return FileManager.default.isExecutableFile(atPath: beside) ? beside : packageRoot + "/.build/debug/estargz"
    }

    private(set) var registry: TestRegistry?

    /// Debian's docker-registry on a free loopback port, storing under DIR/registry; returns the port.
    /// With `logAccess` it logs requests, so `registry.blobBytesServed()` counts what was fetched.
    func startRegistry(logAccess: Bool = false, auth: TestRegistry.Auth = .none) throws -> Int {
        let started = try TestRegistry(auth: auth, storage: directory + "/registry", logAccess: logAccess)
        registry = started
        return started.port
    }

    /// The registry's storage holds each blob as a plain file: the biggest one (the image's layer)
    /// and its digest.
    func largestBlob() throws -> (path: String, digest: String) {
        let blobs = directory + "/registry/docker/registry/v2/blobs"
        let files = FileManager.default.enumerator(atPath: blobs)!.compactMap { $0 as? String }.filter { $0.hasSuffix("/data") }
        let layer = try #require(files.max { fileSize(blobs + "/" + $0) < fileSize(blobs + "/" + $1) })
        return (blobs + "/" + layer, "sha256:" + String(try #require(layer.split(separator: "/").dropLast().last)))
    }

    /// The snapshotter's lazy layer mounts (FUSE mounts below its snapshots), in mount order.
    func lazyMounts() throws -> [String] {
        try String(contentsOfFile: "/proc/mounts", encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") }
            .filter { $0[1].hasPrefix(directory + "/snapshotter/snapshots/") && $0[2].hasPrefix("fuse") }.map { String($0[1]) }
    }

    /// What a lazy mount's read-ahead has asked for so far (`readAheadBytes` of its stats file).
    static func readAheadBytes(of mount: String) throws -> Int64 {
        let data = try Data(contentsOf: URL(fileURLWithPath: mount + "/.stargz-snapshotter/stats"))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return try #require((object["readAheadBytes"] as? NSNumber)?.int64Value)
    }

    /// The busybox image unpacked as an OCI layout (for `estargz image convert oci:…` and skopeo).
    func imageLayout() throws -> String {
        let layout = directory + "/layout"
        if !FileManager.default.fileExists(atPath: layout + "/index.json") {
            try FileManager.default.createDirectory(atPath: layout, withIntermediateDirectories: true)
            try TestSupport.run("/bin/tar", ["-xf", imageArchive, "-C", layout])
        }
        return layout
    }

    /// The bytes of every blob the registry stores (its manifests, configs and layers).
    func registryBytes() throws -> Int64 {
        let blobs = directory + "/registry/docker/registry/v2/blobs"
        let files = FileManager.default.enumerator(atPath: blobs)!.compactMap { $0 as? String }.filter { $0.hasSuffix("/data") }
        return files.reduce(0) { $0 + fileSize(blobs + "/" + $1) }
    }

    /// `estargz pull` into our containerd; returns its progress lines (stderr).
    @discardableResult
    func pull(_ reference: String, namespace: String = "estargz-test") throws -> String {
        let command = ([estargz, "pull", "--address", directory + "/containerd.sock", "--namespace", namespace, reference]
            .map { "'\($0)'" } + ["2>&1"]).joined(separator: " ")
        return try TestSupport.run("/bin/sh", ["-c", command])
    }

    @discardableResult
    func ctrRemote(_ arguments: [String]) throws -> String {
        try TestSupport.run("/usr/bin/ctr-remote", ["--address", directory + "/containerd.sock", "--namespace", "estargz-test"] + arguments)
    }

    /// How ctr prints sizes (containerd's `progress.Bytes`: 1024-based, "%02.1f UNIT").
    static func humanBytes(_ size: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB"]
        var value = Double(size), unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return String(format: "%.1f", value) + " " + units[unit]
    }

    /// Starts `estargz snapshotter` (with `--config CONFIG` when given; its log is appended to).
    func startSnapshotter(config: String? = nil) throws {
        snapshotter = try Self.start(estargz, ["snapshotter", "--root", directory + "/snapshotter", "--address", directory + "/snapshotter.sock"]
                                     + (config.map { ["--config", $0] } ?? []),
                                     log: directory + "/snapshotter.log")
        try Self.waitFor(directory + "/snapshotter.sock")
    }

    func stopSnapshotter() throws {
        snapshotter?.terminate()
        snapshotter?.waitUntilExit()
        snapshotter = nil
        unlink(directory + "/snapshotter.sock")  // so the next start is waited for, not a stale file
    }

    /// A crash: SIGKILL, no cleanup by the snapshotter (its mounts and socket stay as they are).
    func killSnapshotter() {
        guard let snapshotter else { return }
        kill(snapshotter.processIdentifier, SIGKILL)
        snapshotter.waitUntilExit()
        self.snapshotter = nil
        unlink(directory + "/snapshotter.sock")
    }

    func stopContainerd() {
        containerd?.terminate()
        containerd?.waitUntilExit()
        containerd = nil
        unlink(directory + "/containerd.sock")
    }

    /// The fuse manager the snapshotter started (`[fuse_manager] enable = true`), from its pid file.
    var fuseManagerPID: Int32? {
        (try? String(contentsOfFile: directory + "/snapshotter/fuse-manager.sock.pid", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Stops the fuse manager, if one runs: SIGTERM (it unmounts its layers), SIGKILL after 5 s.
    func stopFuseManager() {
        guard let pid = fuseManagerPID else { return }
        func alive() -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
            return !stat.contains(") Z ")
        }
        kill(pid, SIGTERM)
        for _ in 0 ..< 100 where alive() { usleep(50_000) }
        if alive() { kill(pid, SIGKILL) }
        unlink(directory + "/snapshotter/fuse-manager.sock.pid")
    }


    /// containerd's config: our snapshotter as the `estargz` proxy plugin; the CRI plugin off, or
    /// with `cri` on as a Kubernetes node runs it (see README.md): the sandbox image, the estargz
    /// snapshotter with the layer annotations passed on, and `registry` reached over plain HTTP.
    func writeConfig(cri: (sandboxImage: String, registry: String)? = nil) throws {
        var config = """
            version = 2
            root = "\(directory)/containerd-root"
            state = "\(directory)/containerd-state"
            \(cri == nil ? "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]" : "")
            [grpc]
              address = "\(directory)/containerd.sock"
            [proxy_plugins.estargz]
              type = "snapshot"
              address = "\(directory)/snapshotter.sock"

            """
        if let cri {
            config += """
                [plugins."io.containerd.grpc.v1.cri"]
                  sandbox_image = "\(cri.sandboxImage)"
                  stream_server_address = "127.0.0.1"
                  stream_server_port = "0"
                  # CI machines may be containers themselves, where a pod's oom_score_adj cannot go below ours.
                  restrict_oom_score_adj = true
                  [plugins."io.containerd.grpc.v1.cri".containerd]
                    snapshotter = "estargz"
                    disable_snapshot_annotations = false
                  [plugins."io.containerd.grpc.v1.cri".cni]
                    bin_dir = "\(directory)/cni/bin"
                    conf_dir = "\(directory)/cni/conf"
                  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."\(cri.registry)"]
                    endpoint = ["http://\(cri.registry)"]

                """
        }
        config += "\n" + containerdConfig
        try config.write(toFile: directory + "/config.toml", atomically: true, encoding: .utf8)
    }

    func startContainerd(cri: (sandboxImage: String, registry: String)? = nil) throws {
        try writeConfig(cri: cri)
        containerd = try Self.start("/usr/bin/containerd", ["--config", directory + "/config.toml"], log: directory + "/containerd.log")
        try Self.waitFor(directory + "/containerd.sock")
    }

    /// `ctr` again and again for up to 15 s: right after a snapshotter restart containerd's
    /// connection to the plugin may still be in its reconnect backoff, as any client would see.
    @discardableResult
    func ctrRetrying(_ arguments: [String]) throws -> String {
        let deadline = Date().addingTimeInterval(15)
        while true {
            // Right after a restart, containerd's connection to the proxy plugin is either refused
            // (the socket is not there yet) or still the old one, closed ("unavailable"): both pass.
            do { return try ctr(arguments) } catch where Date() < deadline && ["snapshotter.sock", "unavailable"].contains(where: "\(error)".contains) {
                usleep(500_000)
            }
        }
    }

    @discardableResult
    func ctr(_ arguments: [String], namespace: String = "estargz-test") throws -> String {
        try TestSupport.run("/usr/bin/ctr", ["--address", directory + "/containerd.sock", "--namespace", namespace] + arguments)
    }

    func tearDown() {
        _ = try? ctr(["tasks", "kill", "-s", "SIGKILL", "c1"])
        containerd?.terminate()
        containerd?.waitUntilExit()
        try? stopSnapshotter()
        stopFuseManager()
        registry?.stop()
        // Whatever containerd left mounted below our directory.
        if let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) {
            for line in mounts.split(separator: "\n").reversed() {
                let target = line.split(separator: " ")[1]
                if target.hasPrefix(directory) { _ = try? TestSupport.run("/bin/umount", ["-l", String(target)]) }
            }
        }
        if ProcessInfo.processInfo.environment["ESTARGZ_KEEP_TEST_DIRECTORY"] != "1" {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static func start(_ executable: String, _ arguments: [String], log: String) throws -> Process {
        if !FileManager.default.fileExists(atPath: log) { FileManager.default.createFile(atPath: log, contents: nil) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try handle.seekToEnd()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    static func waitFor(_ socket: String) throws {
        for _ in 0 ..< 200 {
            if FileManager.default.fileExists(atPath: socket) { return }
            usleep(50_000)
        }
        throw ContainerdTestError("\(socket) did not appear")
    }
}

struct ContainerdTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension ContainerdTests {
    /// Interop: an image converted by `ctr-remote image convert --estargz --oci` and pushed with
    /// `ctr` reads back through our CLI (`estargz ls/cat REF`) with the source image's files.
    @Test func ctrRemoteConvertedImageReadsThroughUs() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        try environment.startContainerd()
        try environment.ctr(["images", "import", "--no-unpack", environment.imageArchive])
        let reference = "127.0.0.1:\(registry)/bbtest:ctr-remote-esgz"
        try environment.ctrRemote(["image", "convert", "--estargz", "--oci", environment.image, reference])
        try environment.ctr(["images", "push", "--plain-http", reference])

        // Every entry of the source layer is listed; file contents are byte-identical.
        let listing = try TestSupport.run(environment.estargz, ["ls", reference])
        for path in ["bin", "tmp", "proc", "dev", "sys", "etc", "bin/busybox", "etc/message", "bin/sh", "bin/echo", "bin/cat", "bin/ls"] {
            #expect(listing.contains(path), "\(path) missing from:\n\(listing)")
        }
        let message = try TestSupport.run(environment.estargz, ["cat", reference, "etc/message"])
        #expect(message == "hello from the layer\n")
        let busybox = try TestSupport.run("/bin/sh", ["-c", "'\(environment.estargz)' cat \(reference) bin/busybox | sha256sum"])
        let expected = try TestSupport.run("/bin/sh", ["-c", "sha256sum < /bin/busybox"])
        #expect(busybox == expected)
    }
}

extension ContainerdTests {
    /// An image converted with an external TOC, keep-diff-id and shared members, pulled with
    /// `estargz pull` into our snapshotter: the layer is mounted lazily, its TOC found in
    /// the `-esgztoc` image with no setting, and a container runs on it.
    @Test func externalTOCImageRunsLazilyThroughTheSnapshotter() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        let layout = try environment.imageLayout()
        let reference = "127.0.0.1:\(registry)/bbtest:ext"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference, "--estargz-external-toc",
                                                  "--estargz-keep-diff-id", "--estargz-min-chunk-size", "50000"])

        try environment.startSnapshotter()
        try environment.startContainerd()
        try environment.pull(reference)
        let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        #expect(mounts.split(separator: "\n").contains { $0.contains(environment.directory + "/snapshotter/snapshots/") && $0.contains("fuse") },
                "the layer is a lazy FUSE mount")
        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "ext1", "/bin/cat", "/etc/message"])
        #expect(output == "hello from the layer\n")
    }
}

extension ContainerdTests {
    /// `image optimize --estargz-min-chunk-size`: small files share members, and the workload's files
    /// still all sit before the prefetch landmark (which always starts its own member).
    @Test func optimizeWithSharedMembersKeepsThePrioritizedRegion() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let layout = try environment.imageLayout()
        let output = environment.directory + "/optimized-min"
        try TestSupport.run(environment.estargz, ["image", "optimize", "oci:" + layout, "oci:" + output + ":opt",
                                                  "--estargz-min-chunk-size", "50000", "--period", "20", "--", "/bin/cat", "/etc/message"])
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/index.json"))) as? [String: Any]
        let manifestDigest = try #require(((index?["manifests"] as? [[String: Any]])?.last?["digest"] as? String)?.dropFirst(7))
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output + "/blobs/sha256/" + manifestDigest))) as? [String: Any]
        let layerDigest = try #require(((manifest?["layers"] as? [[String: Any]])?.first?["digest"] as? String)?.dropFirst(7))
        let layer = try LayerReader(source: try FileSource(path: output + "/blobs/sha256/" + layerDigest))
        let end = try #require(layer.prefetchRegionEnd)
        for path in ["etc/message", "bin/busybox", "etc/passwd"] {
            let entry = try #require(layer.entry(at: path))
            #expect(layer.chunks(of: entry).allSatisfy { $0.blobEnd <= end }, "\(path) should be prefetched")
            #expect(try layer.read(path: path).count == Int(entry.size))
        }
        let random = try #require(layer.entry(at: "etc/random"))
        #expect(layer.chunks(of: random).allSatisfy { $0.blobOffset >= end })
        // Members are shared: more chunks than distinct member offsets.
        let all = layer.allChunks()
        #expect(Set(all.map(\.chunk.blobOffset)).count < all.count)
        try layer.verifyAllChunks()
    }
}

extension ContainerdTests {
    /// A zstd:chunked image through containerd and our snapshotter: the layer is mounted lazily
    /// (the format is told by its footer) and a container runs on it.
    @Test func rpullMountsZstdChunkedLayersLazily() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let registry = try environment.startRegistry()
        let layout = try environment.imageLayout()
        let reference = "127.0.0.1:\(registry)/bbtest:zstdchunked"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference, "--zstdchunked"])
        let manifest = try TestSupport.run("/usr/bin/skopeo", ["inspect", "--raw", "--tls-verify=false", "docker://" + reference])
        #expect(manifest.contains("application/vnd.oci.image.layer.v1.tar+zstd") && manifest.contains("zstd-chunked.manifest-position"))

        try environment.startSnapshotter()
        try environment.startContainerd()
        try environment.ctrRemote(["image", "rpull", "--plain-http", "--snapshotter", "estargz", reference])
        let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        #expect(mounts.split(separator: "\n").contains { $0.contains(environment.directory + "/snapshotter/snapshots/") && $0.contains("fuse") })
        let output = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "zstd1", "/bin/cat", "/etc/message"])
        #expect(output == "hello from the layer\n")
        let busybox = try environment.ctr(["run", "--rm", "--snapshotter", "estargz", reference, "zstd2", "/bin/sh", "-c", "/bin/busybox | head -c 7"])
        #expect(busybox == "BusyBox")
    }

    /// `image optimize --zstdchunked`: the workload's files first, in a zstd:chunked layer.
    @Test func optimizeWritesZstdChunked() throws {
        let environment = try ContainerdEnvironment()
        defer { environment.tearDown() }
        let layout = try environment.imageLayout()
        let output = environment.directory + "/optimized-zstd"
        try TestSupport.run(environment.estargz, ["image", "optimize", "oci:" + layout, "oci:" + output + ":opt", "--zstdchunked",
                                                  "--period", "20", "--", "/bin/cat", "/etc/message"])
        try expectPrioritized(layout: output, compression: .zstdChunked)
    }
}
