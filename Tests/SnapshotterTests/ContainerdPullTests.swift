import EStargzCore
import Foundation
@testable import Snapshotter
import Testing

/// The image-config arithmetic of `estargz pull` (the containerd side is in ContainerdTests).
struct ContainerdPullTests {
    /// Chain IDs as the OCI image spec defines them: the first diff ID, then
    /// `sha256(parentChainID + " " + diffID)`; checked against sha256sum.
    @Test func chainIDsFollowTheImageSpec() throws {
        let diffIDs = ["a", "b", "c"].map { SHA256Digest.of(Array($0.utf8)).description }
        let chain = ContainerdPull.chainIDs(diffIDs)
        #expect(chain.count == 3 && chain[0] == diffIDs[0])
        func sha256sum(_ text: String) throws -> String {
            let process = Process(), input = Pipe(), output = Pipe()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            input.fileHandleForWriting.write(Data(text.utf8))
            try input.fileHandleForWriting.close()
            let hex = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).prefix(64)
            process.waitUntilExit()
            return "sha256:" + hex
        }
        #expect(chain[1] == (try sha256sum(diffIDs[0] + " " + diffIDs[1])))
        #expect(chain[2] == (try sha256sum(chain[1] + " " + diffIDs[2])))
    }

    /// A config without one sha256 diff ID per layer is an invalid image, said so.
    @Test func diffIDsMustMatchTheLayers() throws {
        let id = SHA256Digest.of(Array("a".utf8)).description
        #expect(try ContainerdPull.diffIDs(Array("{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"\(id)\"]}}".utf8), layers: 1) == [id])
        for (config, layers, fragment) in [("{}", 1, "no rootfs.diff_ids"),
                                           ("{\"rootfs\":{\"diff_ids\":[\"\(id)\"]}}", 2, "1 diff IDs for 2 layers"),
                                           ("{\"rootfs\":{\"diff_ids\":[\"md5:00\"]}}", 1, "\"md5:00\" is not a sha256 digest")] {
            #expect {
                try ContainerdPull.diffIDs(Array(config.utf8), layers: layers)
            } throws: { error in
                "\(error)".contains(fragment) && "\(error)".hasPrefix("invalid image")
            }
        }
    }
}
