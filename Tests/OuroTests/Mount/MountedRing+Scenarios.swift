import Foundation
import Testing

extension MountedRing {
    /// Runs `script` twice — in a fresh local directory and in a fresh directory of the mount, each time as the
    /// current directory — and expects the same output and the same resulting files (names, kinds, sizes, bytes).
    /// The local run is the reference: whatever the local file system does, the mount must do too.
    /// Returns the output of the run in the mount.
    @discardableResult
    func expectSameAsLocal(_ label: String, _ script: String, timeoutSeconds: Double = 60,
                           sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let local = "\"$W\"/local-\(label)"
        let mounted = "\"$M\"/\(label)"
        let localOutput = try ok("mkdir \(local) && cd \(local) && {\n\(script)\n}", timeoutSeconds: timeoutSeconds)
        let mountOutput = try ok("mkdir \(mounted) && cd \(mounted) && {\n\(script)\n}", timeoutSeconds: timeoutSeconds)
        #expect(mountOutput == localOutput, "output in the mount differs from the local run", sourceLocation: sourceLocation)
        let localTree = try ok("cd \(local) && \(Self.treeListing)")
        let mountTree = try ok("cd \(mounted) && \(Self.treeListing)")
        #expect(mountTree == localTree, "files in the mount differ from the local run", sourceLocation: sourceLocation)
        return mountOutput
    }

    /// One line per entry under the current directory: path, kind, and for regular files size and SHA-256.
    static let treeListing = #"""
        find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r p; do
          if [ -f "$p" ] && [ ! -L "$p" ]; then
            printf '%s file %s %s\n' "$p" "$(stat -c %s "$p")" "$(sha256sum < "$p" | cut -c1-64)"
          else
            printf '%s %s\n' "$p" "$(stat -c %F "$p")"
          fi
        done
        """#

    /// A shell script that writes a tree of `directories × filesPerDirectory` small files of varied sizes
    /// (some empty), in nested directories (some three levels deep), plus empty directories, under `path`.
    static func treeGenerator(at path: String, directories: Int, filesPerDirectory: Int, seed: Int = 42) -> String {
        """
        mkdir -p \(path)/empty/inner && awk -v root=\(path) -v dirs=\(directories) -v files=\(filesPerDirectory) -v seed=\(seed) 'BEGIN {
          srand(seed)
          for (d = 0; d < dirs; d++) {
            dir = root "/dir" int(d / 5) "/sub" (d % 5)
            if (d % 3 == 0) dir = dir "/deeper/still"
            system("mkdir -p \\"" dir "\\"")
            for (f = 0; f < files; f++) {
              path = dir "/file-" f ".txt"
              size = (f % 17 == 0) ? 0 : int(rand() * rand() * 12000)
              printf "" > path
              for (written = 0; written < size; ) {
                line = sprintf("%s line %d %d\\n", path, written, int(rand() * 1000000000))
                printf "%s", line > path
                written += length(line)
              }
              close(path)
            }
          }
        }'
        """
    }
}

/// Text helpers for the scenario tests.
enum Lines {
    /// The output's non-empty lines.
    static func of(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
    }
}
