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
    /// container through the RuntimeService: the image's layers are mounted lazily from the
    /// labels the CRI plugin sets, the container prints files of both layers, and the registry
    /// serves a small part of that image.
    @Test func podRunsLazilyThroughTheCRIPlugin() async throws {
        let node = try CRINode()
        defer { node.environment.tearDown() }
        try node.environment.startSnapshotter()
        try node.environment.startContainerd(cri: (sandboxImage: node.pause, registry: node.registryHost))

        let output = try await node.runPod(auth: nil)
        #expect(output == ["hello from the layer", "hello from the second layer"])
        // bbdata's two layers; the pause image's one layer is bbdata's first (the same busybox tree), so
        // its snapshot is shared. Only the CRI plugin's labels name these layers: no other pull ran.
        #expect(node.lazyMounts() == 2, "\(node.snapshotterLog())")
        let fetched = node.fetched()
        print("CRI pull + pod + container: \(fetched) of \(node.imageBytes) registry bytes of the image fetched")
        #expect(fetched > 0 && fetched < node.imageBytes / 3, "fetched \(fetched) of \(node.imageBytes) bytes")

        // `estargz pull --namespace k8s.io` pre-pulls for the kubelet: the CRI plugin knows the image.
        let prepulled = "\(node.registryHost)/bbdata:prepulled"
        try TestSupport.run(node.environment.estargz, ["image", "convert", "oci:" + (try node.environment.imageLayout()), prepulled])
        #expect(try await node.imageTags(prepulled) == [])
        try node.environment.pull(prepulled, namespace: "k8s.io")
        var tags: [String] = []
        for _ in 0 ..< 50 where !tags.contains(prepulled) {
            tags = try await node.imageTags(prepulled)
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(tags.contains(prepulled), "\(tags)")
    }

    /// A private registry (basic auth): the pod's pull secret (CRI AuthConfig) lets containerd read
    /// manifest and config, the node's credentials in the snapshotter's `[registry.credentials]`
    /// let it fetch chunks: the pod starts lazily.
    @Test func privateRegistryWithNodeCredentialsIsLazy() async throws {
        let node = try CRINode(auth: .basic)
        defer { node.environment.tearDown() }
        let config = node.environment.directory + "/snapshotter.toml"
        try """
            [registry.credentials]
            "\(node.registryHost)" = "\(TestRegistry.user):\(TestRegistry.password)"
            """.write(toFile: config, atomically: true, encoding: .utf8)
        try node.environment.startSnapshotter(config: config)
        try node.environment.startContainerd(cri: (sandboxImage: node.pause, registry: node.registryHost))

        let output = try await node.runPod(auth: (TestRegistry.user, TestRegistry.password))
        #expect(output == ["hello from the layer", "hello from the second layer"])
        #expect(node.lazyMounts() == 2, "\(node.snapshotterLog())")
        let fetched = node.fetched()
        print("CRI, private registry, node credentials: \(fetched) of \(node.imageBytes) bytes fetched")
        #expect(fetched > 0 && fetched < node.imageBytes / 3, "fetched \(fetched) of \(node.imageBytes) bytes")
    }

    /// With only the pod's pull secret (no node credentials) the snapshotter cannot fetch the
    /// layers: it says so and containerd downloads them with the secret, so the pod still starts.
    @Test func pullSecretAloneFallsBackToADownload() async throws {
        let node = try CRINode(auth: .basic)
        defer { node.environment.tearDown() }
        try node.environment.startSnapshotter()
        try node.environment.startContainerd(cri: (sandboxImage: node.pause, registry: node.registryHost))

        let output = try await node.runPod(auth: (TestRegistry.user, TestRegistry.password))
        #expect(output == ["hello from the layer", "hello from the second layer"])
        #expect(node.lazyMounts() == 0)
        #expect(node.snapshotterLog().contains("falling back to download"))
        #expect(node.fetched() >= node.imageBytes - 4096, "the whole image was downloaded")
    }
}

/// A node for the CRI tests: a registry (plain or basic auth, logging requests) holding the
/// two-layer eStargz image `bbdata:esgz` and a busybox pause image, and the CRI calls of a kubelet.
private struct CRINode {
    let environment: ContainerdEnvironment
    let registry: TestRegistry
    let registryHost: String
    let reference: String
    let pause: String
    /// The bytes of bbdata's blobs in the registry.
    let imageBytes: Int64
    private let pushed: Int64

    init(auth: TestRegistry.Auth = .none) throws {
        environment = try ContainerdEnvironment(dataLayer: true)
        do {
            let port = try environment.startRegistry(logAccess: true, auth: auth)
            registry = try #require(environment.registry)
            registryHost = "127.0.0.1:\(port)"
            reference = "\(registryHost)/bbdata:esgz"
            pause = "\(registryHost)/pause:1"
            // Pushes with the credentials in a docker config of their own.
            let docker = environment.directory + "/docker"
            try FileManager.default.createDirectory(atPath: docker, withIntermediateDirectories: true)
            let token = Data("\(TestRegistry.user):\(TestRegistry.password)".utf8).base64EncodedString()
            try "{\"auths\": {\"\(registryHost)\": {\"auth\": \"\(token)\"}}}".write(toFile: docker + "/config.json", atomically: true, encoding: .utf8)
            let estargz = environment.estargz
            func push(_ layout: String, _ destination: String) throws {
                try TestSupport.run("/usr/bin/env", ["DOCKER_CONFIG=" + docker, estargz, "image", "convert", "oci:" + layout, destination])
            }
            try push(try environment.imageLayout(), reference)
            imageBytes = try environment.registryBytes()
            // The sandbox ("pause") image: busybox sleeping, eStargz too.
            let archive = environment.directory + "/pause.tar", layout = environment.directory + "/pause"
            try TestSupport.run("/usr/bin/python3", [environment.packageRoot + "/Tests/SnapshotterTests/Fixtures/make_busybox_image.py",
                                                     archive, "pause", "--cmd", "[\"/bin/busybox\", \"sleep\", \"3600\"]"])
            try FileManager.default.createDirectory(atPath: layout, withIntermediateDirectories: true)
            try TestSupport.run("/bin/tar", ["-xf", archive, "-C", layout])
            try push(layout, pause)
            pushed = registry.blobBytesServed(repository: "bbdata")
        } catch {
            environment.tearDown()
            throw error
        }
    }

    /// bbdata's blob bytes the registry has served since the pushes.
    func fetched() -> Int64 { registry.blobBytesServed(repository: "bbdata") - pushed }

    func snapshotterLog() -> String {
        (try? String(contentsOfFile: environment.directory + "/snapshotter.log", encoding: .utf8)) ?? ""
    }

    /// Layers the snapshotter mounted lazily so far.
    func lazyMounts() -> Int { snapshotterLog().components(separatedBy: "remote snapshot mounted lazily").count - 1 }

    /// The repo tags the CRI ImageService reports for `image` (none when it does not know it).
    func imageTags(_ image: String) async throws -> [String] {
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: environment.directory + "/containerd.sock"),
                                                       transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            try await Runtime_V1_ImageService.Client(wrapping: client).imageStatus(.with { $0.image.image = image }).image.repoTags
        }
    }

    /// What a kubelet does for a one-container pod: pull both images (with the pull secret, when
    /// given), run the sandbox on the host network, create and start the container, wait for it
    /// to exit; then stop and remove the pod. Returns the container's output lines.
    func runPod(auth: (username: String, password: String)?) async throws -> [String] {
        let logs = environment.directory + "/pods"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let transport = try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: environment.directory + "/containerd.sock"),
                                                       transportSecurity: .plaintext)
        let reference = self.reference, pause = self.pause
        let output = try await withGRPCClient(transport: transport) { client -> String in
            let images = Runtime_V1_ImageService.Client(wrapping: client)
            let runtime = Runtime_V1_RuntimeService.Client(wrapping: client)
            for image in [reference, pause] {
                let pulled = try await images.pullImage(.with {
                    $0.image.image = image
                    if let auth { $0.auth = .with { $0.username = auth.username; $0.password = auth.password } }
                })
                #expect(pulled.imageRef.hasPrefix("sha256:"))
            }

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
        return output.split(separator: "\n").map { $0.split(separator: " ", maxSplits: 3).last.map(String.init) ?? "" }
    }
}
