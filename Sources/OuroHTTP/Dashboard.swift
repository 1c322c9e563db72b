import Dispatch
import Glibc
import Hummingbird
import Logging
import OuroClient
import OuroCore

/// The web dashboard a node serves on its HTTP port: one page (`DashboardPage`) and the JSON it reads, all built
/// from ordinary client calls to this node (`RingPicture`, `DirectoryView`, `FileView`), so what it shows is what
/// any client of the ring would see.
///
/// - `GET /api/ring`: the members with their state, successor, disk, chunks, repair and scrub;
/// - `GET /api/events`: the same as server-sent events, one a second, so the page follows the ring without reloads;
/// - `GET /api/dir?path=/a&after=name`, `GET /api/file?path=/a/b`: the file tree and one file's copies;
/// - `POST /api/heal` (`NODE HEAL`), `POST /api/verify` (`NODE SCRUB` on every live member);
/// - with a cluster secret: `POST /api/login` with the secret as its body sets a session cookie (an HMAC of the
///   secret, never the secret), which every other `/api` call needs; `GET /api/session` says whether it is set.
public struct Dashboard: Sendable {
    public let node: NodeAddress
    public let secret: String?
    let pool = ConnectionPool()
    let sampler: RingSampler

    public init(node: NodeAddress, secret: String?) {
        self.node = node
        self.secret = secret
        sampler = RingSampler(node: node, pool: pool)
    }

    static let cookieName = "ouro_session"

    /// What the session cookie holds: it proves its holder gave the secret, and cannot be turned back into it.
    var sessionToken: String? {
        secret.map { HMACSHA256.hex(key: Array($0.utf8), message: Array("ouro dashboard session v1".utf8)) }
    }

    func isAuthorized(_ request: Request) -> Bool {
        guard let token = sessionToken else { return true }
        guard let presented = request.cookies[Self.cookieName]?.value else { return false }
        return ClusterSecret.matches(presented, token)
    }

    func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: DashboardPage.html)))
        }
        router.get("api/session") { request, _ -> Response in
            json(#"{"secret":\#(secret != nil),"authorized":\#(isAuthorized(request))}"#)
        }
        router.post("api/login") { request, _ -> Response in
            let body = try await request.body.collect(upTo: ClusterSecret.maxBytes + 64)
            guard let secret, let token = sessionToken,
                  let offered = ClusterSecret.parse(String(buffer: body)), ClusterSecret.matches(offered, secret)
            else {
                usleep(200_000)  // a wrong guess costs the guesser time
                return json(#"{"error":"wrong secret"}"#, status: .unauthorized)
            }
            var response = json(#"{"authorized":true}"#)
            response.setCookie(Cookie(name: Self.cookieName, value: token, path: "/", httpOnly: true, sameSite: .strict))
            return response
        }
        router.get("api/ring") { request, _ -> Response in
            try await guarded(request) { try encode(try RingPicture.fetch(from: node, pool: pool)) }
        }
        router.get("api/dir") { request, _ -> Response in
            let path = request.uri.queryParameters.get("path") ?? "/"
            let after = request.uri.queryParameters.get("after")
            return try await guarded(request) { try encode(try DirectoryView.fetch(path: path, after: after, from: node, pool: pool)) }
        }
        router.get("api/file") { request, _ -> Response in
            let path = request.uri.queryParameters.get("path") ?? ""
            return try await guarded(request) { try encode(try FileView.fetch(path: path, from: node, pool: pool)) }
        }
        router.post("api/heal") { request, _ -> Response in
            try await guarded(request) { try encode(["result": try NodeClient(node, pool: pool).heal()]) }
        }
        router.post("api/verify") { request, _ -> Response in
            try await guarded(request) {
                let map = try NodeClient(node, pool: pool).netmap()
                let members = map.members.isEmpty ? [node] : map.liveAddresses
                let asked = parallelMap(members, width: 16) { (try? NodeClient($0, pool: pool).scrub()) != nil }
                return try encode(["result": "scrub started on \(asked.filter { $0 }.count) of \(members.count) live nodes"])
            }
        }
        router.get("api/events") { request, _ -> Response in
            guard isAuthorized(request) else { return json(#"{"error":"the cluster secret is needed"}"#, status: .unauthorized) }
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
                            body: ResponseBody { [sampler] writer in
                                // One event a second until the page goes away (the write fails) or the server stops.
                                while !Task.isCancelled {
                                    let event = await sampler.latestEvent()
                                    try await writer.write(ByteBuffer(string: event))
                                    try await Task.sleep(for: .seconds(1))
                                }
                                try await writer.finish(nil)
                            })
        }
    }

    /// Runs `work` (blocking client calls) off the server's threads, after checking the session.
    func guarded(_ request: Request, _ work: @escaping @Sendable () throws -> Response) async throws -> Response {
        guard isAuthorized(request) else { return json(#"{"error":"the cluster secret is needed"}"#, status: .unauthorized) }
        do {
            return try await offThread(work)
        } catch let error as OuroError {
            let status: HTTPResponse.Status = error.code == .notFound ? .notFound : error.code == .denied ? .forbidden
                : error.code == .badRequest || error.code == .notDir ? .badRequest : .serviceUnavailable
            return try encode(["error": "\(error)"], status: status)
        } catch {
            return try encode(["error": "\(error)"], status: .serviceUnavailable)
        }
    }
}

/// The latest ring picture as a server-sent event, fetched at most about once a second however many pages watch.
actor RingSampler {
    let node: NodeAddress
    let pool: ConnectionPool
    private var latest: (at: Double, event: String)?

    init(node: NodeAddress, pool: ConnectionPool) {
        self.node = node
        self.pool = pool
    }

    func latestEvent() async -> String {
        if let latest, monotonicSeconds() - latest.at < 0.8 { return latest.event }
        let (node, pool) = (node, pool)
        let data: String
        do {
            data = try await offThread { String(decoding: WireJSON.encode(try RingPicture.fetch(from: node, pool: pool)), as: UTF8.self) }
        } catch {
            data = String(decoding: WireJSON.encode(["error": "\(error)"]), as: UTF8.self)
        }
        let event = "event: ring\ndata: \(data)\n\n"
        latest = (monotonicSeconds(), event)
        return event
    }
}

/// Blocking work (socket calls to nodes) on a thread of its own, never on one of the server's few.
func offThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(with: Result { try work() })
        }
    }
}

func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
             body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
}

func encode<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
             body: ResponseBody(byteBuffer: ByteBuffer(bytes: WireJSON.encode(value))))
}
