import Glibc
import Logging
import OuroClient
import OuroCore

/// What happens to a connection after a request.
enum AfterRequest {
    case keepOpen
    case close
}

/// One client connection being served: its reader, and the writer side of its socket.
final class ClientSession {
    let socket: Socket
    let reader: FramedReader

    init(socket: Socket) {
        self.socket = socket
        reader = FramedReader(source: socket)
    }

    func reply(_ line: String) throws { try socket.write(line + "\n") }

    /// Header and body in one write: one segment, so the client wakes once for the whole answer.
    func replyBinary<T: BinaryCodable>(_ value: T) throws {
        let body = WireBinary.encode(value)
        try socket.write(line: "OK \(body.count)", then: body)
    }

    func replyJSON<T: Encodable>(_ value: T) throws {
        let body = WireJSON.encode(value)
        try socket.write(line: "OK \(body.count)", then: body)
    }
}

extension Node {
    /// `trusted`: a session on the node's own Unix socket (only its user can connect), which needs no secret.
    func serve(_ socket: Socket, trusted: Bool = false, admission: ConnectionAdmission) {
        let session = ClientSession(socket: socket)
        var authenticated = trusted || configuration.secret == nil
        var unauthenticatedRequests = 0
        /// The nonces of this connection's challenge (client's, node's), once `NODE HELLO` came.
        var challenge: (String, String)?
        /// A plain-text TCP connection to a node whose ring encrypts: it may only ask `NODE PING` and `NODE LOCAL`.
        var plainOnEncryptedRing = false
        if !trusted {
            // TLS or plain text, told by the first byte (a TLS handshake record starts with 0x16; a request with a
            // letter). Within the time to authenticate: a connection that sends nothing is not held longer.
            socket.setTimeouts(seconds: authenticated ? Limits.idleTimeoutSeconds : Limits.unauthenticatedIdleSeconds)
            guard let first = socket.peekFirstByte() else { return }
            if first == Socket.tlsHandshakeByte {
                // Without a secret there is no key: closing tells the client (its handshake ends) at once.
                guard let secret = configuration.secret else { return }
                do {
                    try socket.startTLS(TLSContext.server(secret: secret))
                } catch {
                    if wrongSecretLog.shouldLog() { logger.warning("TLS handshake failed", metadata: ["peer": "\(socket.peer)", "error": "\(error)"]) }
                    return
                }
                // The handshake proved the secret both ways (the PSK binder, the Finished messages).
                authenticated = true
                noteProved(admission)
            } else if configuration.secret != nil && configuration.requiresEncryption {
                plainOnEncryptedRing = true
            }
        }
        while !isStopping {
            // A client that has not proved it knows the secret does not get to hold a connection long: it has
            // `authenticateWithinSeconds` from being accepted, whatever it sends.
            if !authenticated {
                let left = admission.acceptedAt + Limits.authenticateWithinSeconds - monotonicSeconds()
                guard left > 0 else {
                    refuseAndClose(session, OuroError(.denied, "the cluster secret was not proved within \(Int(Limits.authenticateWithinSeconds)) s"))
                    return
                }
                socket.setTimeouts(seconds: max(1, min(Limits.unauthenticatedIdleSeconds, Int(left.rounded(.up)))))
            } else {
                socket.setTimeouts(seconds: Limits.idleTimeoutSeconds)
            }
            let line: String?
            do {
                line = try session.reader.readLine()
            } catch let error as OuroError {
                // An over-long or broken header: say so, then close (what follows cannot be framed).
                refuseAndClose(session, error)
                return
            } catch {
                return
            }
            guard let line else { return }
            socket.setTimeouts(seconds: Limits.ioTimeoutSeconds)
            let request: Request
            do {
                request = try Request(line: line, maxFileSizeBytes: configuration.maxFileSizeBytes)
            } catch {
                if announcesPayload(line) || !authenticated {
                    // Never read the body of a refused request as commands; and a client without the secret gets no
                    // second try at a line.
                    refuseAndClose(session, error)
                    return
                }
                guard (try? session.reply(error.line)) != nil else { return }
                continue
            }
            switch request {
            case .nodeAuth:
                // The secret itself on the wire: never accepted (anyone reading the connection would have it).
                guard configuration.secret != nil, !authenticated else {
                    guard (try? session.reply("OK")) != nil else { return }
                    continue
                }
                refuseAndClose(session, OuroError(.denied, "NODE AUTH would send the secret in the clear; prove it with NODE HELLO and NODE PROVE, or use the node's Unix socket (docs/protocol.md)"))
                return
            case .nodeHello where plainOnEncryptedRing, .nodeProve where plainOnEncryptedRing:
                refuseAndClose(session, Self.encryptedRingRefusal)
                return
            case .nodeHello(let clientNonce):
                guard let secret = configuration.secret, !authenticated else {
                    guard (try? session.reply("OK")) != nil else { return }  // no secret here: nothing to prove
                    continue
                }
                guard challenge == nil else {
                    refuseAndClose(session, OuroError(.denied, "one NODE HELLO per connection"))
                    return
                }
                let serverNonce = ChallengeAuth.nonce()
                challenge = (clientNonce, serverNonce)
                let proof = ChallengeAuth.proof(secret: secret, role: .node, clientNonce: clientNonce, serverNonce: serverNonce)
                guard (try? session.reply("CHALLENGE \(serverNonce) \(proof)")) != nil else { return }
                continue
            case .nodeProve(let offered):
                guard let secret = configuration.secret, !authenticated else {
                    guard (try? session.reply("OK")) != nil else { return }
                    continue
                }
                guard let (clientNonce, serverNonce) = challenge,
                      ChallengeAuth.matches(offered, ChallengeAuth.proof(secret: secret, role: .client, clientNonce: clientNonce,
                                                                         serverNonce: serverNonce)) else {
                    if wrongSecretLog.shouldLog() { logger.warning("wrong cluster secret", metadata: ["peer": "\(socket.peer)"]) }
                    refuseAndClose(session, OuroError(.denied, challenge == nil ? "NODE PROVE before NODE HELLO" : "wrong cluster secret"))
                    return
                }
                authenticated = true
                noteProved(admission)
                guard (try? session.reply("OK")) != nil else { return }
                continue
            default:
                break
            }
            if !authenticated { unauthenticatedRequests += 1 }
            // `NODE LOCAL` names the node's Unix socket, which checks who connects (mode 0600: its own user only).
            guard authenticated || ((request == .nodePing || request == .nodeLocal) && unauthenticatedRequests <= Limits.unauthenticatedPings) else {
                // Nothing of an unauthenticated request runs, and a payload it announced is never read as commands.
                // (A few pings are answered, not an endless stream that would hold the connection open.)
                refuseAndClose(session, plainOnEncryptedRing ? Self.encryptedRingRefusal
                                        : OuroError(.denied, "this ring has a cluster secret: prove it first (NODE HELLO, NODE PROVE)"))
                return
            }
            let started = monotonicNanoseconds()
            var failed = true
            defer { requestMetrics.record(RequestMetrics.command(of: line), nanoseconds: monotonicNanoseconds() - started, failed: failed) }
            do {
                let after = try handle(request, session)
                failed = false
                if after == .close { return }
            } catch let error as OuroError {
                logger.debug("request failed", metadata: ["request": "\(line.prefix(80))", "error": "\(error)"])
                if case .filePull = request {
                    // A pull ends with the end of the stream: say why, then close.
                    try? session.reply(error.code == .notFound ? "ERR file not found" : error.line)
                    return
                }
                if request.payloadBytes > 0 || { if case .chunkRelay = request { return true } else { return false } }() {
                    // The payload may be partly unread: the connection cannot carry another request.
                    refuseAndClose(session, error)
                    return
                }
                guard (try? session.reply(error.line)) != nil else { return }
            } catch {
                logger.error("request failed", metadata: ["request": "\(line.prefix(80))", "error": "\(error)"])
                refuseAndClose(session, OuroError(.internal, "\(error)"))
                return
            }
        }
    }

    static let encryptedRingRefusal = OuroError(.denied, "this ring has a cluster secret and encrypts its traffic: connect with TLS "
                                                + "keyed by the secret (ouro, a mount or a node given --secret-file), or use the node's Unix "
                                                + "socket (NODE LOCAL names it; docs/protocol.md)")

    /// A header whose command carries a payload (by its first two words), even if the rest did not parse.
    private func announcesPayload(_ line: String) -> Bool {
        let words = line.split(separator: " ", maxSplits: 2).prefix(2).joined(separator: " ")
        return ["FILE PUSH", "INODE WRITE", "CONTENT PUSH", "PIECE PUT", "CHUNK RELAY", "CHUNK PUT", "CATALOG APPLY", "CATALOG HAVE", "CATALOG COLLECT"].contains(words)
            || line.hasPrefix("FS ")
    }

    /// Sends the error, stops sending, and drains what the client still sends for a bounded time before closing,
    /// so the client reads the error rather than a connection reset.
    func refuseAndClose(_ session: ClientSession, _ error: OuroError) {
        try? session.reply(error.line)
        session.socket.shutdownWrite()
        session.socket.setTimeouts(seconds: 2)
        var scratch = [UInt8](repeating: 0, count: 64 * 1024)
        let deadline = monotonicSeconds() + 5
        while monotonicSeconds() < deadline {
            let count = (try? scratch.withUnsafeMutableBytes { try session.reader.read(into: $0) }) ?? 0
            if count == 0 { break }
        }
    }

    private func handle(_ request: Request, _ session: ClientSession) throws -> AfterRequest {
        switch request {
        case .nodePing:
            try session.reply("PONG")
        case .nodeAuth, .nodeHello, .nodeProve:
            try session.reply("OK")  // answered in `serve`
        case .nodeStatus:
            try session.reply("PORT \(address)\nNEXT \(next?.description ?? "<unset>")\nOK")
        case .nodeNext(let successor):
            try setNext(successor)
            logger.info("successor set", metadata: ["next": "\(successor)"])
            try session.reply("OK next=\(successor)")
        case .nodeScrub:
            scrub.request()
            try session.reply("OK scrub requested")
        case .nodeHeal:
            try healRing()
            try session.reply("OK network healed")
        case .nodeJoin(let joiner):
            let previous = try admit(joiner)
            try session.reply("OK next=\(previous)")
        case .nodeLeave:
            // A line per chunk handed over; a client that goes away stops the leave (asked again, it resumes).
            try leaveRing { done, total, bytes, totalBytes in
                try session.socket.write("MOVED \(done)/\(total) \(bytes)/\(totalBytes)\n")
            }
            try session.reply("OK left the ring")
            // The process ends as if told to stop: `ouro node` waits for this signal.
            kill(getpid(), SIGTERM)
            return .close
        case .nodePlan(let change, let node):
            try session.replyJSON(change == .leave ? leavePlan(for: node) : MovePlan.join(node))
        case .nodeInfo:
            try session.replyJSON(info())
        case .nodeUsage:
            try session.replyJSON(diskUsage())
        case .nodeLocal:
            guard let path = localSocketPath else { throw OuroError(.notSupported, "this node has no local socket") }
            try session.reply("OK \(path)")
        case .netmapDiscover:
            try discover()
            try session.reply("OK")
        case .netmapGet:
            try session.socket.write(RingReport.netmap(netmap) + "OK\n")
        case .netmapSet(let map):
            adopt(map)
            try session.reply("OK")
        case .topologyWalk:
            try session.socket.write(topology().map { "\($0.from)->\($0.to)\n" }.joined() + "OK\n")
        case .filePush(let size, let name):
            let content = try receivePush(session.reader, sizeBytes: size)
            do {
                try commitAndBroadcast { catalog, version, now in
                    try catalog.planPutFile(path: name, content: content, version: version, nowNs: now, newID: newInodeID)
                }
            } catch {
                discardContent(content)
                throw error
            }
            try session.reply("FILE \(size) bytes split into \(content.parts) chunks and distributed\nOK")
        case .inodeWrite(let inode, let size, let binary):
            let content = size <= UInt64(Limits.inlineContentBytes)
                ? FileContent.inline(try session.reader.readBytes(Int(size)), start: address)
                : try receivePush(session.reader, sizeBytes: size)
            let stat: InodeStat?
            do {
                stat = try commitAndBroadcast { catalog, version, now in
                    try catalog.planWriteContent(inode: inode, content: content, version: version, nowNs: now)
                }
            } catch {
                discardContent(content)
                throw error
            }
            if binary, let stat { try session.replyBinary(stat) } else { try session.replyJSON(stat) }
        case .filePull(let name):
            try sendFile(name, session)
            return .close
        case .fileList:
            try sendList(session)
            return .close
        case .fileShort:
            try sendShortOfCopies(session)
        case .fileStat(let name):
            guard let stat = catalog.read({ catalog in catalog.resolve(name).map { catalog.stat($0) } }) else {
                throw OuroError.notFound("\(name) not found")
            }
            try session.replyJSON(stat)
        case .fileDelete(let name):
            try deleteFile(name)
            try session.reply("OK")
        case .chunkRelay(let header):
            try receiveRelay(header, session)
        case .chunkGet(let chunk, let offset, let length):
            try sendChunk(chunk, offset: offset, lengthBytes: length, session)
        case .chunkPut(let chunk, let length, let crc, let deferSync):
            try receiveChunkCopy(chunk, lengthBytes: length, crc32c: crc, deferSync: deferSync, session.reader)
            try session.reply("OK")
        case .contentPush(let size):
            // A segment of a file the mount is writing: its hash would not be the file's, so none is made.
            try session.replyBinary(try receivePush(session.reader, sizeBytes: size, hashing: false))
        case .piecePut(let size, let crc):
            try session.replyBinary(try receivePiece(session.reader, sizeBytes: size, crc32c: crc))
        case .chunkKeep(let chunk):
            guard keepChunk(chunk) else { throw OuroError.notFound("chunk \(chunk) is not stored here") }
            try session.reply("OK")
        case .chunkCheck(let chunk):
            let (length, crc) = try chunks.check(chunk)
            try session.reply("OK \(length) \(crc)")
        case .chunkVerify(let chunk):
            try verifyStoredCopy(chunk)
            try session.reply("OK")
        case .chunkVerified(let chunk):
            try session.reply("OK \(Int(verifier.lastReadBack(chunk) ?? 0))")
        case .catalogSync(let incarnation, let after):
            try session.replyBinary(syncBatch(incarnation: incarnation, after: after))
        case .catalogApply(let length, let deferSync):
            let payload = try session.reader.readBytes(length)
            // The payload is consumed: from here on an error is answered and the connection carries on.
            do {
                try catalog.merge(EncodedRecords.decode(payload), deferSync: deferSync)
                try session.reply("OK")
            } catch let error as OuroError {
                try session.reply(error.line)
            }
        case .catalogHave(let length):
            let payload = try session.reader.readBytes(length)
            do {
                try session.replyBinary(try catalog.answers(WireBinary.decode([CatalogRowVersion].self, from: payload)))
            } catch let error as OuroError {
                try session.reply(error.line)
            }
        case .catalogCollect(let length):
            let payload = try session.reader.readBytes(length)
            do {
                try catalog.collect(WireBinary.decode([CatalogRowVersion].self, from: payload))
                try session.reply("OK")
            } catch let error as OuroError {
                try session.reply(error.line)
            }
        case .catalogResync(let cut, let peer):
            try noteSweep(against: peer, cutClock: cut)
            try session.reply("OK")
        case .fs(let operation, let length, let binary):
            let payload = try session.reader.readBytes(length)
            do {
                if binary {
                    try session.replyBinary(metadata(operation, WireBinary.decode(FSRequest.self, from: payload)))
                } else {
                    try session.replyJSON(metadata(operation, WireJSON.decode(FSRequest.self, from: payload)))
                }
            } catch let error as OuroError {
                try session.reply(error.line)
            }
        }
        return .keepOpen
    }

    /// A fresh, random inode number (never the root's).
    func newInodeID() -> UInt64 {
        UInt64.random(in: 2...(UInt64(1) << 62))
    }
}
