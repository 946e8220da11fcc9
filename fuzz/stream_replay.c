/*
 * Runs lu_stream_validate() over many inputs in one process, for the
 * AddressSanitizer/UBSan check in `make test` (tests/test_stream_asan.py):
 *
 *   stream_replay [-k TYPE,TYPE,...] FILE...   each file is one input
 *   stream_replay [-k TYPE,TYPE,...]           stdin: inputs as {u32 LE length, bytes}
 *   stream_replay --known                      print the built-in record types
 *
 * Every input is copied into a heap buffer of exactly its size, so reading a
 * byte past it is a sanitizer report.  For each it prints one line:
 * "<result> <bad_offset> <bad_type> <lu_hash64>" (result as lu_stream_validate,
 * with the known types of -k, default the built-in list), after checking
 * the invariants of stream_check.h (a violation aborts).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream_check.h"

static uint32_t *known = NULL;
static uint32_t nr_known = 0;

static void fail(const char *what)
{
    fprintf(stderr, "stream_replay: %s\n", what);
    exit(2);
}

static void one(const uint8_t *data, uint64_t len)
{
    uint8_t *buf = malloc(len);  /* for len 0: nothing readable at all */
    uint64_t off_all, off_none;
    uint32_t type_all, type_none;
    int64_t n_all, n_none;

    if ( !buf && len )
        fail("out of memory");
    if ( len )
        memcpy(buf, data, len);
    n_all = lu_stream_validate(buf, len, known, nr_known, &off_all, &type_all);
    n_none = lu_stream_validate(buf, len, known, 0, &off_none, &type_none);
    stream_check(len, n_all, off_all, n_none, off_none);
    printf("%" PRId64 " %" PRIu64 " %" PRIu32 " %016" PRIx64 "\n", n_all,
           n_all < 0 ? off_all : 0, n_all < 0 ? type_all : 0, lu_hash64(buf, len));
    free(buf);
}

static uint8_t *read_all(FILE *f, uint64_t *len)
{
    size_t cap = 1 << 16, n = 0, got;
    uint8_t *buf = malloc(cap);

    while ( buf && (got = fread(buf + n, 1, cap - n, f)) > 0 )
    {
        n += got;
        if ( n == cap && !(buf = realloc(buf, cap *= 2)) )
            break;
    }
    if ( !buf || ferror(f) )
        fail("cannot read input");
    *len = n;
    return buf;
}

static void parse_known(const char *list)
{
    const char *p = list;
    char *end;

    nr_known = 0;
    known = malloc(sizeof(*known) * (strlen(list) / 2 + 1));
    if ( !known )
        fail("out of memory");
    while ( *p )
    {
        unsigned long v = strtoul(p, &end, 0);

        if ( end == p || (*end && *end != ',') || v > 0xffffffffUL )
            fail("-k takes record types separated by commas");
        known[nr_known++] = (uint32_t)v;
        p = *end ? end + 1 : end;
    }
}

int main(int argc, char **argv)
{
    int i = 1;

    known = (uint32_t *)stream_known_types;
    nr_known = STREAM_NR_KNOWN;
    if ( argc == 2 && !strcmp(argv[1], "--known") )
    {
        for ( uint32_t k = 0; k < STREAM_NR_KNOWN; k++ )
            printf("0x%08" PRIx32 "\n", stream_known_types[k]);
        return 0;
    }
    if ( argc > 2 && !strcmp(argv[1], "-k") )
    {
        parse_known(argv[2]);
        i = 3;
    }
    if ( i < argc )
    {
        for ( ; i < argc; i++ )
        {
            FILE *f = fopen(argv[i], "rb");
            uint64_t len;
            uint8_t *data;

            if ( !f )
                fail("cannot open an input file");
            data = read_all(f, &len);
            fclose(f);
            one(data, len);
            free(data);
        }
    }
    else
    {
        uint64_t len, pos = 0;
        uint8_t *all = read_all(stdin, &len);

        while ( pos < len )
        {
            uint32_t n;

            if ( len - pos < 4 )
                fail("stdin: a length prefix is cut short");
            n = (uint32_t)all[pos] | (uint32_t)all[pos + 1] << 8 |
                (uint32_t)all[pos + 2] << 16 | (uint32_t)all[pos + 3] << 24;
            pos += 4;
            if ( n > len - pos )
                fail("stdin: an input is shorter than its length prefix");
            one(all + pos, n);
            pos += n;
        }
        free(all);
    }
    if ( fflush(stdout) )
        fail("cannot write output");
    return 0;
}
