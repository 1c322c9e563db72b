// libFuzzer target: `ParserExercise.run` (OuroCore) fed anything. Built with OuroCore's sources by fuzz/run.sh;
// every input of fuzz/corpus/ is replayed by FuzzCorpusTests.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    ParserExercise.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
