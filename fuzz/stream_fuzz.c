/*
 * libFuzzer harness for the live-update stream framing (csrc/lu_stream.c):
 * xen#2 runs lu_stream_validate() on whatever it finds in RAM after a live
 * update, so no input may make it read out of bounds, hang, or return
 * something stream_check() says is impossible.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc -Ifuzz \
 *       fuzz/stream_fuzz.c csrc/lu_stream.c -o fuzz/out/stream/stream_fuzz
 *
 * `make fuzz` builds and runs it (fuzz/fuzz_stream.py).
 */
#include <stddef.h>
#include <stdint.h>

#include "stream_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t off_all, off_none;
    uint32_t type_all, type_none;
    int64_t n_all, n_none;

    n_all = lu_stream_validate(data, size, stream_known_types, STREAM_NR_KNOWN, &off_all,
                               &type_all);
    n_none = lu_stream_validate(data, size, stream_known_types, 0, &off_none, &type_none);
    stream_check(size, n_all, off_all, n_none, off_none);
    if ( lu_hash64(data, size) != lu_hash64(data, size) )
        stream_violation("lu_hash64 is not a function of its input", 0, size, 0);
    return 0;
}
