/// A validated file name as used on the wire: a relative path of UTF-8 components separated by `/`.
/// Rejects absolute paths, `.`/`..` components, empty components, NUL and control line breaks, and
/// components longer than 255 bytes, so no name can escape a directory or break a header line.
public struct PathName: Hashable, Sendable, CustomStringConvertible {
    public let components: [String]

    public init(_ text: some StringProtocol) throws(OuroError) {
        let text = String(text)
        guard !text.isEmpty else { throw .badRequest("empty name") }
        guard text.utf8.count <= Limits.pathBytes else { throw OuroError(.tooLarge, "name longer than \(Limits.pathBytes) bytes") }
        guard !text.hasPrefix("/") else { throw .badRequest("absolute names are not allowed: \(text)") }
        var parts: [String] = []
        // A trailing slash ("dir/") is tolerated; empty inner components ("a//b") are not.
        let body = text.hasSuffix("/") ? text.dropLast() : Substring(text)
        for component in body.split(separator: "/", omittingEmptySubsequences: false) {
            try parts.append(PathName.validComponent(component))
        }
        guard !parts.isEmpty else { throw .badRequest("empty name") }
        components = parts
    }

    public init(components: [String]) throws(OuroError) {
        for component in components { _ = try PathName.validComponent(component) }
        guard !components.isEmpty else { throw .badRequest("empty name") }
        self.components = components
    }

    /// Checks one component: not empty, not `.`/`..`, no `/`, NUL, CR or LF, at most 255 bytes.
    public static func validComponent(_ component: some StringProtocol) throws(OuroError) -> String {
        let name = String(component)
        guard !name.isEmpty else { throw .badRequest("empty name component") }
        guard name != ".", name != ".." else { throw .badRequest("'.' and '..' are not allowed in names") }
        guard name.utf8.count <= Limits.nameComponentBytes else {
            throw OuroError(.tooLarge, "name component longer than \(Limits.nameComponentBytes) bytes")
        }
        guard !name.utf8.contains(where: { $0 == 0 || $0 == 0x2F || $0 == 0x0A || $0 == 0x0D }) else {
            throw .badRequest("names may not contain NUL, '/', CR or LF")
        }
        return name
    }

    public var description: String { components.joined(separator: "/") }
    public var parentComponents: ArraySlice<String> { components.dropLast() }
    public var lastComponent: String { components[components.count - 1] }
}
