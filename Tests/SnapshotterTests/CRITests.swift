import CRIClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import TestSupport
import Testing

/// The Kubernetes path: containerd's CRI plugin configured as README.md's node recipe says
/// (`snapshotter = "estargz"`, `disable_snapshot_annotations = false`), driven as a kubelet
/// drives it through the CRI API (our client generated from cri-api's protos).
@Suite(.serialized) struct CRITests {
    /// PullImage through the ImageService, then a pod sandbox (host network: no CNI needed) and a
    /// container through the RuntimeService: both images' layers are mounted lazily from the
    /// labels the CRI plugin sets, the container prints files of both layers of its image, and
    /// the registry serves a small part of that image.
    @Test func podRunsLazilyThroughTheCRIPlugin() async throws {
        let environment = try ContainerdEnvironment(dataLayer: true)
        defer { environment.tearDown() }
        let port = try environment.startRegistry(logAccess: true)
        let registryHost = "127.0.0.1:\(port)"
        let layout = try environment.imageLayout()
        let reference = "\(registryHost)/bbdata:esgz"
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + layout, reference])
        let imageBytes = try environment.registryBytes()
        // The sandbox ("pause") image: busybox sleeping, eStargz too.
        let pause = "\(registryHost)/pause:1"
        let pauseArchive = environment.directory + "/pause.tar", pauseLayout = environment.directory + "/pause"
        try TestSupport.run("/usr/bin/python3", [environment.packageRoot + "/Tests/SnapshotterTests/Fixtures/make_busybox_image.py",
                                                 pauseArchive, "pause", "--cmd", "[\"/bin/busybox\", \"sleep\", \"3600\"]"])
        try FileManager.default.createDirectory(atPath: pauseLayout, withIntermediateDirectories: true)
        try TestSupport.run("/bin/tar", ["-xf", pauseArchive, "-C", pauseLayout])
        try TestSupport.run(environment.estargz, ["image", "convert", "oci:" + pauseLayout, pause])
        let registry = try #require(environment.registry)
        let pushed = registry.blobBytesServed(repository: "bbdata")

        try environment.startSnapshotter()
        try environment.startContainerd(cri: (sandboxImage: pause, registry: registryHost))
        let logs = environment.directory + "/pods"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)

        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: environment.directory + "/containerd.sock"),
                                                       transportSecurity: .plaintext)
        let output = try await withGRPCClient(transport: transport) { client -> String in
            let images = Runtime_V1_ImageService.Client(wrapping: client)
            let runtime = Runtime_V1_RuntimeService.Client(wrapping: client)
            let pulled = try await images.pullImage(.with { $0.image.image = reference })
            #expect(pulled.imageRef.hasPrefix("sha256:"))

            let hostNetwork = Runtime_V1_NamespaceOption.with { $0.network = .node }
            let sandboxConfig = Runtime_V1_PodSandboxConfig.with {
                $0.metadata = .with { $0.name = "lazy"; $0.uid = "lazy-uid"; $0.namespace = "default"; $0.attempt = 0 }
                $0.logDirectory = logs
                $0.linux.securityContext.namespaceOptions = hostNetwork
            }
            let sandbox = try await runtime.runPodSandbox(.with { $0.config = sandboxConfig }).podSandboxID
            func runReader() async throws -> String {
                let container = try await runtime.createContainer(.with {
                    $0.podSandboxID = sandbox
                    $0.sandboxConfig = sandboxConfig
                    $0.config = .with {
                        $0.metadata.name = "reader"
                        $0.image.image = reference
                        $0.command = ["/bin/cat", "/etc/message", "/etc/second"]
                        $0.logPath = "reader.log"
                        $0.linux.securityContext.namespaceOptions = hostNetwork
                    }
                }).containerID
                _ = try await runtime.startContainer(.with { $0.containerID = container })
                let deadline = ContinuousClock.now + .seconds(30)
                while try await runtime.containerStatus(.with { $0.containerID = container }).status.state != .containerExited {
                    guard ContinuousClock.now < deadline else { throw ContainerdTestError("the container did not exit") }
                    try await Task.sleep(for: .milliseconds(100))
                }
                let status = try await runtime.containerStatus(.with { $0.containerID = container }).status
                #expect(status.exitCode == 0)
                return try String(contentsOfFile: logs + "/reader.log", encoding: .utf8)
            }
            let result: Result<String, any Error>
            do { result = .success(try await runReader()) } catch { result = .failure(error) }
            _ = try? await runtime.stopPodSandbox(.with { $0.podSandboxID = sandbox })
            _ = try? await runtime.removePodSandbox(.with { $0.podSandboxID = sandbox })
            return try result.get()
        }
        // CRI log lines: TIMESTAMP STREAM TAG TEXT.
        let lines = output.split(separator: "\n").map { $0.split(separator: " ", maxSplits: 3).last.map(String.init) ?? "" }
        #expect(lines == ["hello from the layer", "hello from the second layer"], "\(output)")
        let snapshotterLog = try String(contentsOfFile: environment.directory + "/snapshotter.log", encoding: .utf8)
        // bbdata's two layers; the pause image's one layer is bbdata's first (the same busybox tree), so
        // its snapshot is shared. Only the CRI plugin's labels name these layers: no other pull ran.
        #expect(snapshotterLog.components(separatedBy: "remote snapshot mounted lazily").count == 3, "\(snapshotterLog)")
        let fetched = registry.blobBytesServed(repository: "bbdata") - pushed
        print("CRI pull + pod + container: \(fetched) of \(imageBytes) registry bytes of the image fetched")
        #expect(fetched > 0 && fetched < imageBytes / 3, "fetched \(fetched) of \(imageBytes) bytes")
    }
}
