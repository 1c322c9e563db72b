/// The closed set of error codes on the wire (`ERR <CODE> <message>`). Clients map codes, never message texts.
public enum ErrorCode: String, Sendable, Codable, CaseIterable {
    case notFound = "NOT_FOUND"
    /// An inode number the catalog holds the removal of (NOT_FOUND: never heard of).
    case gone = "GONE"
    case exists = "EXISTS"
    case notEmpty = "NOT_EMPTY"
    case notDir = "NOT_DIR"
    case isDir = "IS_DIR"
    case badRequest = "BAD_REQUEST"
    case tooLarge = "TOO_LARGE"
    case noSpace = "NO_SPACE"
    case unavailable = "UNAVAILABLE"
    case corrupt = "CORRUPT"
    case denied = "DENIED"
    case notSupported = "NOT_SUPPORTED"
    case `internal` = "INTERNAL"
}

/// A failure with a wire code; thrown by every layer and sent as one `ERR` line.
public struct OuroError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The reply line, without the newline. Messages are flattened to one line.
    public var line: String {
        let flat = message.map { $0.isNewline ? " " : $0 }
        return "ERR \(code.rawValue) \(String(flat))"
    }

    public var description: String { line }

    /// Parses a line `ERR CODE message`; an unknown code (e.g. the original `ERR file not found`) maps by meaning.
    public init?(errorLine: String) {
        guard errorLine.hasPrefix("ERR") else { return nil }
        let rest = errorLine.dropFirst(3).drop(while: { $0 == " " })
        let codeText = rest.prefix(while: { $0 != " " })
        if let code = ErrorCode(rawValue: String(codeText)) {
            self.init(code, String(rest.dropFirst(codeText.count).drop(while: { $0 == " " })))
        } else if rest.hasPrefix("file not found") {
            self.init(.notFound, String(rest))
        } else {
            self.init(.internal, String(rest))
        }
    }

    public static func badRequest(_ message: String) -> OuroError { OuroError(.badRequest, message) }
    public static func notFound(_ message: String) -> OuroError { OuroError(.notFound, message) }
    public static func unavailable(_ message: String) -> OuroError { OuroError(.unavailable, message) }
}
