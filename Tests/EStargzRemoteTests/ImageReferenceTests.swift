import Testing
@testable import EStargzRemote

@Suite struct ImageReferenceTests {
    @Test func dockerHubDefaults() throws {
        let ref = try ImageReference(parsing: "alpine")
        #expect(ref.registry == "docker.io")
        #expect(ref.repository == "library/alpine")
        #expect(ref.tag == "latest")
        #expect(ref.endpointHost == "registry-1.docker.io")
    }

    @Test func hostPortTagDigest() throws {
        let digest = "sha256:" + String(repeating: "a", count: 64)
        let ref = try ImageReference(parsing: "127.0.0.1:5000/team/app:1.0@\(digest)")
        #expect(ref.registry == "127.0.0.1:5000")
        #expect(ref.repository == "team/app")
        #expect(ref.tag == "1.0")
        #expect(ref.digest == digest)
        #expect(ref.manifestReference == digest)
        #expect(ref.isLoopback)
    }

    @Test func localhostAndRemoteHosts() throws {
        #expect(try ImageReference(parsing: "localhost/app").isLoopback)
        #expect(try ImageReference(parsing: "localhost:5000/app").registry == "localhost:5000")
        #expect(try !ImageReference(parsing: "ghcr.io/o/app:v").isLoopback)
        #expect(try ImageReference(parsing: "user/app").repository == "user/app")
        #expect(try ImageReference(parsing: "user/app").registry == "docker.io")
    }

    @Test func rejectsMalformed() {
        #expect(throws: RegistryError.self) { try ImageReference(parsing: "") }
        #expect(throws: RegistryError.self) { try ImageReference(parsing: "a//b") }
        #expect(throws: RegistryError.self) { _ = try ImageReference(parsing: "Upper/Case") }
        #expect(throws: RegistryError.self) { try ImageReference(parsing: "app@md5:x") }
    }

    @Test func challengeParsing() {
        let (scheme, params) = RegistryClient.parseChallenge(#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push""#)
        #expect(scheme == "Bearer")
        #expect(params["realm"] == "http://127.0.0.1:1/token")
        #expect(params["service"] == "reg")
        #expect(params["scope"] == "repository:a/b:pull,push")
    }

    @Test func dockerConfigCredentials() {
        let json = #"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"127.0.0.1:5000":{"auth":"YTpiOmM="}}}"#
        let parsed = CredentialStore.parseDockerConfig(Array(json.utf8))
        #expect(parsed["docker.io"] == RegistryCredential(username: "user", password: "pass"))
        #expect(parsed["127.0.0.1:5000"] == RegistryCredential(username: "a", password: "b:c"))
    }

    @Test func ociLayoutLocation() throws {
        guard case let .layout(dir, tag) = try ImageLocation(parsing: "oci:/tmp/x:v1") else { Issue.record("not a layout"); return }
        #expect(dir == "/tmp/x")
        #expect(tag == "v1")
        guard case let .layout(_, none) = try ImageLocation(parsing: "oci:/tmp/x") else { Issue.record("not a layout"); return }
        #expect(none == nil)
    }
}
