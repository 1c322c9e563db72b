import COuroSupport
import Glibc
import OuroCore

/// Nodes on this machine, in this network namespace, are reached over their Unix socket (`<data>/node.sock`, from
/// `NODE LOCAL`) instead of loopback TCP: a round trip takes about half as long, and bytes cost less CPU.
/// A route holds only for the node process it was checked with: over the Unix socket `NODE STATUS` must name the
/// address asked for, and the process at the other end (SO_PEERCRED) must share our network namespace, so a network
/// partition between namespaces still holds. A later connection from another process (the node restarted, or
/// another node took over the path) is checked again; anything that fails falls back to TCP.
/// `OURO_LOCAL_ROUTES=0` turns this off.
public final class LocalRoutes: @unchecked Sendable {
    public static let shared = LocalRoutes()

    private struct Route {
        /// nil: not on this machine (or not reachable that way), asked at `checkedAt`.
        var path: String?
        var pid: Int32
        var checkedAt: Double
    }

    private let lock = Lock()
    private var routes: [NodeAddress: Route] = [:]
    private let enabled = getenv("OURO_LOCAL_ROUTES").map { String(cString: $0) != "0" } ?? true
    /// How long a node found not to be local stays so before it is asked again.
    static let recheckSeconds = 60.0

    /// A Unix connection to `address` when it is a node on this machine; nil: use TCP.
    func connect(_ address: NodeAddress, timeoutMilliseconds: Int) -> Socket? {
        guard enabled else { return nil }
        let now = monotonicSeconds()
        if let route = lock.withLock({ routes[address] }) {
            if let path = route.path {
                if let socket = try? Socket.connect(unixPath: path, peer: address.description),
                   ouro_peer_pid(socket.fd) == route.pid {
                    return socket
                }
            } else if now - route.checkedAt < Self.recheckSeconds {
                return nil
            }
        }
        let (socket, route) = discover(address, timeoutMilliseconds: timeoutMilliseconds)
        lock.withLock { routes[address] = Route(path: route?.path, pid: route?.pid ?? 0, checkedAt: now) }
        socket?.setTimeouts(seconds: Limits.ioTimeoutSeconds)
        return socket
    }

    /// Asks the node over TCP for its Unix socket, then checks who answers there. Every step is bounded by the
    /// caller's connect timeout: a probe with a short one must not wait on a silent node for the I/O timeout.
    private func discover(_ address: NodeAddress, timeoutMilliseconds: Int) -> (Socket?, (path: String, pid: Int32)?) {
        let seconds = max(1, (timeoutMilliseconds + 999) / 1000)
        guard let tcpSocket = try? Socket.connect(to: address, timeoutMilliseconds: timeoutMilliseconds) else { return (nil, nil) }
        tcpSocket.setTimeouts(seconds: seconds)
        let tcp = Connection(address, over: tcpSocket)
        guard (try? tcp.authenticate()) != nil, (try? tcp.send("NODE LOCAL")) != nil, let reply = try? tcp.readReply(),
              reply.hasPrefix("OK /") else {
            return (nil, nil)
        }
        let path = String(reply.dropFirst(3))
        guard let unix = try? Socket.connect(unixPath: path, peer: address.description) else { return (nil, nil) }
        unix.setTimeouts(seconds: seconds)
        // The process at the other end: in our network namespace, and the owner of the socket file it listens on.
        var info = stat()
        let pid = ouro_peer_pid(unix.fd)
        guard pid > 0, ouro_same_network_namespace(pid) == 1, stat(path, &info) == 0,
              ouro_peer_uid(unix.fd) == Int64(info.st_uid) else {
            return (nil, nil)
        }
        let checked = Connection(address, over: unix)
        guard (try? checked.send("NODE STATUS")) != nil, (try? checked.readReply()) == "PORT \(address)",
              (try? checked.readReply())?.hasPrefix("NEXT ") == true, (try? checked.readReply()) == "OK",
              checked.reader.bufferedBytes == 0 else {
            return (nil, nil)
        }
        return (unix, (path, pid))
    }
}
