import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs a shell command; returns its exit status.
@discardableResult
public func shell(_ command: String) -> Int32 {
    let status = system(command)
    return status == -1 ? -1 : (status >> 8) & 0xff
}

/// Runs a program to completion and returns its stdout; throws with its stderr when it fails.
@discardableResult
public func run(_ executable: String, _ arguments: [String], stdin: [UInt8]? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = Pipe()
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin)) }
    try? input.fileHandleForWriting.close()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw TestSupportError("\(executable) \(arguments.joined(separator: " ")) failed: \(String(decoding: errors, as: UTF8.self))")
    }
    return String(decoding: output, as: UTF8.self)
}

/// Stops `processes`: SIGTERM, up to 2 s of polling, then SIGKILL. Polls instead of
/// `waitUntilExit`, which can hang on a cooperative-pool thread.
public func terminate(_ processes: [Process]) {
    for process in processes where process.isRunning {
        kill(process.processIdentifier, SIGTERM)
    }
    for process in processes {
        var waited = 0
        while process.isRunning, waited < 100 {
            usleep(20_000)
            waited += 1
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
