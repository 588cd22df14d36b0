"""The scenarios of run.py, roughly in the order of RFC 3501 section 6."""

from run import SECOND, SIMPLE, THIRD, append, corpus, three

SCENARIOS: dict[str, list] = {}


def scenario(name: str, steps: list) -> None:
    SCENARIOS[name] = steps


scenario("any-state", [
    "a NOOP", "b CAPABILITY", "c FOO", "d UID FOO 1", "e LOGIN user7 pass", "f NOOP extra",
    "g SELECT", 'h ID NIL', 'i ID ("name" "x" "version" "1")', "j ENABLE CONDSTORE", "k ENABLE FOO",
    "l NAMESPACE", "m FETCH 1 FLAGS", "n CHECK", "o CLOSE", "p EXPUNGE", "q UNSELECT",
])


scenario("literals", [
    ("nologin", ""),
    "a LOGIN {5}\r\nuser7 {4}\r\npass",
    "b SELECT {5}\r\nINBOX",
    "c CREATE {3}\r\nL/x",
    'd LIST {0}\r\n {1}\r\n*',
    'e LIST "" {3}\r\nL/%',
    "f CREATE {5+}\r\nLplus",
    'g LIST "" "L*"',
    'h STATUS {5}\r\ninbox (MESSAGES)',
    'i CREATE "q\\"uo\\\\te"',
    'j LIST "" "q*"',
    'k CREATE a]b',
    'l LIST "" a]b',
    'm SELECT {0}\r\n',
    'n CREATE ""',
    'o SUBSCRIBE {3}\r\nL/x',
    'p LSUB "" {1}\r\n*',
])

scenario("list-patterns", [
    "a CREATE a/b/c", "b CREATE a/d", "c CREATE x", "d CREATE a/b/c/",
    'e LIST "" ""', 'f LIST "a/" ""', 'g LIST "a/b" ""', 'h LIST "" "%"', 'i LIST "" "*"',
    'j LIST "a/" "%"', 'k LIST "" "a/%"', 'l LIST "a" "/%"', 'm LIST "" "a/*"', 'n LIST "a/" "*"',
    'o LIST "" "A/%"', 'p LIST "" "inbox"', 'q LIST "" "InBoX"', 'r LIST "" "%/%"',
    's LIST "#x" "%"', 't LIST "" "a%"', 'u LIST "" "*c"', 'v LIST "" "a/b/%"', 'w LIST "" nomatch',
    'x LIST "" "a/b/c"', 'y LIST "" a', 'z LIST "" /', 'aa LIST "/" "%"', 'ab LIST "" "*/"',
    'ac LIST "" "INBOX/%"', 'ad LIST "inbox" "*"',
])

scenario("list-noselect", [
    "a CREATE p/q/r", "b DELETE p/q", 'c LIST "" "*"', "d DELETE p", 'e LIST "" "*"', "f DELETE p/q/r",
    'g LIST "" "*"', "h CREATE p/q", 'i SELECT p', 'j DELETE p', 'k LIST "" "p*"',
    "l CREATE z/", 'm LIST "" "z*"', "n CREATE /lead", 'o LIST "" "*lead*"',
])

scenario("lsub", [
    "a CREATE s1/s2/s3", "b SUBSCRIBE s1/s2/s3", 'c LSUB "" "*"', 'd LSUB "" "%"', 'e LSUB "" "s1/%"',
    'f LSUB "s1/" "%"', "g SUBSCRIBE s1", 'h LSUB "" "%"', "i UNSUBSCRIBE s1", "j UNSUBSCRIBE s1",
    "k SUBSCRIBE nosuch", 'l LSUB "" ""', "m SUBSCRIBE INBOX", 'n LSUB "" "*"', "o DELETE s1/s2/s3",
    'p LSUB "" "*"', 'q LIST (SUBSCRIBED) "" "*"', 'r LIST "" "*" RETURN (SUBSCRIBED CHILDREN)',
    's LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"',
])

scenario("list-extended", [
    "a CREATE Sent (USE (\\Sent))", "b CREATE Arch (USE (\\Archive))", "c CREATE Bad (USE (\\Foo))",
    'd LIST (SPECIAL-USE) "" "*"', 'e LIST "" "*" RETURN (SPECIAL-USE)', 'f LIST "" ("Sent" "Arch")',
    'g LIST "" "*" RETURN (STATUS (MESSAGES UIDNEXT))', 'h LIST () "" "%"', 'i LIST (FOO) "" "%"',
    'j LIST "" "%" RETURN ()', 'k LIST "" "%" RETURN (CHILDREN)',
])

scenario("select", three() + [
    "s1 SELECT T", "s2 STATUS T (MESSAGES RECENT UIDNEXT UNSEEN)", "s3 EXAMINE T", "s4 SELECT nosuch",
    "s5 FETCH 1 FLAGS", "s6 SELECT T (CONDSTORE)", "s7 STORE 1 +FLAGS (\\Seen)", "s8 EXAMINE T",
    "s9 STORE 1 +FLAGS (\\Seen)", "s10 SELECT INBOX", "s11 STATUS T (MESSAGES RECENT UNSEEN UIDVALIDITY)",
    "s12 STATUS T ()", "s13 STATUS T (FOO)", "s14 STATUS nosuch (MESSAGES)", "s15 STATUS T MESSAGES",
])

scenario("fetch-basic", three() + [
    "s SELECT T",
    "f1 FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)",
    "f2 FETCH 1 ENVELOPE", "f3 FETCH 1:* BODYSTRUCTURE", "f4 FETCH 1:* BODY",
    "f5 FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject From)])",
    "f6 FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Subject From To Cc Date Message-ID)])",
    "f7 FETCH 1 BODY.PEEK[HEADER.FIELDS (\"Subject\" {4}\r\nfrom)]",
    "f8 FETCH 1 BODY.PEEK[]<0.10>", "f9 FETCH 1 BODY.PEEK[]<10000.10>", "f10 FETCH 1 BODY.PEEK[TEXT]<5.1000>",
    "f11 FETCH 1 BODY.PEEK[1.MIME]", "f12 FETCH 1 BODY.PEEK[1]", "f13 FETCH 1 BODY.PEEK[2]",
    "f14 FETCH 3 BODY.PEEK[2.TEXT]", "f15 FETCH 3 BODY.PEEK[2.HEADER]", "f16 FETCH 3 BODY.PEEK[2.MIME]",
    "f17 FETCH 3 BODY.PEEK[1.TEXT]", "f18 FETCH 3 BODY.PEEK[3]", "f19 FETCH 3 BODY.PEEK[2.1]",
    "f20 FETCH 3 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])", "f21 FETCH 1 RFC822.HEADER", "f22 FETCH 1 RFC822.TEXT",
    "f23 FETCH 2 FAST", "f24 FETCH 2 ALL", "f25 FETCH 2 FULL", "f26 FETCH 4 FLAGS", "f27 FETCH 0 FLAGS",
    "f28 UID FETCH 99 FLAGS", "f29 UID FETCH 2:99 FLAGS", "f30 FETCH *:1 UID", "f31 FETCH 2:* UID",
    "f32 FETCH 1 (FLAGS", "f33 FETCH 1 FOO", "f34 FETCH 1 BODY[", "f35 FETCH 1,3 BODY[0]",
    "f36 FETCH 2 BODY[]", "f37 FETCH 2 FLAGS", "f38 FETCH 1 BODY[HEADER.FIELDS ()]",
    "f39 FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (X-ODD)]<0.5>)", "f40 UID FETCH * UID",
    "f41 FETCH 3 RFC822.SIZE", "f42 FETCH 1 BODY.PEEK[]<0.0>", "f43 FETCH 1 BINARY.PEEK[1]",
])

scenario("fetch-empty", [
    "c CREATE T", "s SELECT T", "a FETCH 1:* FLAGS", "b FETCH * FLAGS", "d UID FETCH 1:* FLAGS",
    "e UID FETCH * FLAGS", "f SEARCH ALL", "g UID SEARCH ALL", "h STORE 1:* +FLAGS (x)",
    "i UID STORE 1:* +FLAGS (x)", "j COPY 1:* INBOX", "k UID COPY 1:* INBOX", "l SEARCH 1:*",
    "m FETCH 1 FLAGS", "n UID EXPUNGE 1:*",
])

scenario("store", three() + [
    "s SELECT T",
    "a STORE 1 FLAGS (\\Answered)", "b STORE 1:2 +FLAGS.SILENT (\\Draft)", "c FETCH 1:* FLAGS",
    "d STORE 1 -FLAGS \\Answered", "e STORE 1 +FLAGS (\\Recent)", "f STORE 1 +FLAGS (\\Foo)",
    "g STORE 1 +FLAGS (odd$key_w.x)", "h STORE 1 +FLAGS (a]b)", "i STORE 1 +FLAGS ({3}\r\nabc)",
    "j STORE 1 FLAGS ()", "k UID STORE 1:* +FLAGS (\\Seen)", "l STORE 5 +FLAGS (x)", "m STORE 1 FLAGS.SILENT (k1 k2)",
    "n STORE 1 XFLAGS (a)", "o STORE 1 +FLAGS (\\seen \\DELETED)", "p FETCH 1 FLAGS", "q STORE 1 +FLAGS \\Seen \\Flagged",
    "r STORE * -FLAGS (\\Seen)", "t FETCH 3 BODY[TEXT]", "u FETCH 3 BODY[TEXT]", "v STORE 2 FLAGS (\\Flagged \\Flagged)",
])

scenario("search", three() + [
    "s SELECT T",
    "a SEARCH ALL", "b SEARCH SEEN", "c SEARCH UNSEEN", "d SEARCH FLAGGED", "e SEARCH KEYWORD $Label1",
    "f SEARCH UNKEYWORD $Label1", "g SEARCH FROM alice", "h SEARCH TO Carl", "i SEARCH CC dan", "j SEARCH BCC x",
    "k SEARCH SUBJECT hello", "l SEARCH SUBJECT café", "m SEARCH CHARSET UTF-8 SUBJECT \"caf\"",
    "n SEARCH BODY test", "o SEARCH TEXT bob", "p SEARCH HEADER X-Odd odd", "q SEARCH HEADER X-Odd \"\"",
    "r SEARCH BEFORE 8-Feb-1994", "t SEARCH ON 7-Feb-1994", "u SEARCH SINCE 1-Jan-2000",
    "v SEARCH SENTBEFORE 8-Feb-1994", "w SEARCH SENTON 8-Feb-1994", "x SEARCH SENTSINCE 8-Feb-1994",
    "y SEARCH LARGER 300", "z SEARCH SMALLER 300", "aa SEARCH UID 2:*", "ab SEARCH 2:*", "ac SEARCH NOT 2",
    "ad SEARCH OR 1 3", "ae SEARCH OR (SEEN FLAGGED) NOT (1)", "af SEARCH 1:* UNDELETED", "ag SEARCH NEW",
    "ah SEARCH OLD", "ai SEARCH RECENT", "aj SEARCH ANSWERED", "ak SEARCH DRAFT", "al SEARCH UNDRAFT",
    "am UID SEARCH 1:2", "an UID SEARCH UID 2:3", "ao SEARCH CHARSET FOO ALL", "ap SEARCH FOO",
    "aq SEARCH", "ar SEARCH ()", "as SEARCH 5", "at SEARCH *", "au SEARCH BEFORE \"8-Feb-1994\"",
    "av SEARCH ON 32-Feb-1994", "aw SEARCH SUBJECT {5}\r\nhello", "ax SEARCH CHARSET us-ascii TEXT inner",
    "ay SEARCH HEADER Message-ID <m1@example.org>", "az SEARCH DELETED", "ba SEARCH LARGER abc",
    "bb SEARCH NOT NOT 1", "bc SEARCH OR OR 1 2 3", "bd SEARCH 1,2 3", "be SEARCH UNANSWERED UNFLAGGED",
    "bf SEARCH MODSEQ 1", "bg SEARCH TEXT \"\"", "bh SEARCH 4:5",
])

scenario("search-charset", three() + [
    "s SELECT T", b"a SEARCH CHARSET UTF-8 SUBJECT {5}\r\ncaf\xc3\xa9", b"b SEARCH CHARSET UTF-8 BODY {3}\r\n\xc3\xa9t",
    b"c SEARCH CHARSET ISO-8859-1 BODY {2}\r\n\xe9t", b'd SEARCH SUBJECT "caf\xc3\xa9"',
])

scenario("copy-move", three() + [
    "s SELECT T", "d CREATE D", "a COPY 1:3 D", "b COPY 1,3 D", "c UID COPY 1:2,3 D", "e COPY 1 nosuch",
    "f UID COPY 99 D", "g COPY 4 D", "h MOVE 2 D", "i FETCH 1:* UID", "j UID MOVE 3 D", "k UID MOVE 99 D",
    "l STATUS D (MESSAGES UIDNEXT)", "m COPY 1 T", "n MOVE 1 nosuch", "o UID EXPUNGE 1", "p STORE 1 +FLAGS (\\Deleted)",
    "q UID EXPUNGE 2", "r UID EXPUNGE 1", "t FETCH 1:* UID", "u EXAMINE D", "v MOVE 1 T", "w UID EXPUNGE 1",
    "x COPY 1:* T",
])

scenario("append", [
    "c CREATE T",
    append("a1", "T", SIMPLE, '(\\Seen) "07-Feb-1994 21:52:25 -0800"'),
    append("a2", "T", SIMPLE, '" 7-Feb-1994 21:52:25 +0100"'),
    append("a3", "T", SIMPLE, '"7-Feb-1994 21:52:25 +0100"'),
    append("a4", "T", SIMPLE, '"07-Feb-1994 21:52:25"'),
    append("a5", "T", SIMPLE, '(\\Recent)'),
    append("a6", "T", SIMPLE, '(\\Foo)'),
    append("a7", "T", SIMPLE, '()'),
    append("a8", "nosuch", SIMPLE),
    append("a9", "T", b""),
    b"a10 APPEND T {5+}\r\nhello",
    b"a11 APPEND T (\\Seen) {5}\r\nhello (\\Draft) {5}\r\nworld",
    append("a12", "INBOX", SIMPLE, '(kw1 kw2)'),
    append("a13", "T", SIMPLE, '"30-Feb-1994 21:52:25 +0100"'),
    append("a14", "T", SIMPLE, '"07-Feb-1994 21:52:25 +0100" "x"'),
    "s SELECT T", "f FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE)",
])

scenario("mailboxes", [
    "a CREATE m/", 'b LIST "" "m*"', "c CREATE m", "d CREATE INBOX", "e CREATE inbox", "f CREATE INBOX/sub",
    "g RENAME m mm", 'h LIST "" "m*"', "i CREATE n/o/p", "j RENAME n nn", 'k LIST "" "n*"', "l RENAME nn mm",
    "m RENAME nosuch zz", "n DELETE n", "o DELETE nn", 'p LIST "" "nn*"', "q DELETE INBOX", "r DELETE nosuch",
    "t RENAME INBOX ibx", 'u LIST "" "*"', "v CREATE &AMk-t&AOk-", 'w LIST "" "&*"', "x CREATE &Jjo-bad&",
    b"y CREATE caf\xc3\xa9",
    "z RENAME mm mm", "aa RENAME mm MM", "ab CREATE q/", 'ac LIST "" "q*"', "ad DELETE q/", 'ae LIST "" "q*"',
    "af RENAME INBOX/sub INBOX/sub2", "ag SELECT nn/o", "ah RENAME nn/o/p nn/o/p/q", "ai CREATE a%b", "aj CREATE a*b",
    "ak DELETE INBOX/", "al CREATE INBOX.x", "am CREATE nn/o",
])

scenario("wrong-state", [
    ("nologin", ""), "a SELECT INBOX", "b LIST \"\" *", "c FETCH 1 FLAGS", "d LOGIN user7 wrong",
    "e AUTHENTICATE FOO", "f LOGIN user7", "g LOGIN \"user7\" \"pass\"", "h LOGIN user7 pass", "i STARTTLS",
    "j SELECT INBOX", "k CHECK", "l UID FETCH 1 FLAGS", "m +tag NOOP",
    "n  NOOP", "o NOOP ", "p* NOOP", "q{ NOOP", "r UID", "s FETCH", "t fetch 1 flags", "u Uid Fetch 1 Flags",
])

scenario("idle", three() + [
    "s SELECT T", ("raw", b"i IDLE\r\n"), ("read", 0.5), ("other", "o1 SELECT T"),
    ("other", "o2 STORE 1 +FLAGS (\\Answered)"), ("other", "o3 EXPUNGE"), ("other", "o4 STORE 2 +FLAGS (\\Deleted)"),
    ("other", "o5 EXPUNGE"), ("read", 1.5) , ("raw", b"DONE\r\n"), ("read", 1.0), "n NOOP",
    ("other", append("o6", "T", SIMPLE)), "n2 NOOP", ("other", "o7 STORE 1 +FLAGS (\\Flagged)"), "n3 NOOP",
    ("other", "o8 STORE 1 +FLAGS (\\Deleted)"), ("other", "o9 EXPUNGE"), "n4 FETCH 1 FLAGS", "n5 STORE 1 +FLAGS (x)",
    "n6 SEARCH ALL", "n7 NOOP",
])

scenario("recursivematch", [
    "a CREATE s1/s2/s3", "b CREATE s1/t", "c SUBSCRIBE s1/s2/s3", "d SUBSCRIBE s1/t", "e CREATE v", "f SUBSCRIBE v",
    "g CREATE v/w", "h SUBSCRIBE v/w",
    'i LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"', 'j LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"',
    'k LIST (SUBSCRIBED RECURSIVEMATCH) "" "s1/%"', 'l LIST (SUBSCRIBED RECURSIVEMATCH) "" "s1"',
    'm LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)', 'n LIST (SUBSCRIBED) "" "%"',
    'o LIST (SPECIAL-USE RECURSIVEMATCH) "" "%"', 'p LIST (SUBSCRIBED RECURSIVEMATCH) "" "s%"',
])


def _corpus_steps(items: str) -> list:
    import os

    from run import CORPUS
    files = sorted(os.listdir(CORPUS))
    steps: list = ["c CREATE T"]
    steps += [append(f"a{index}", "T", corpus(name), '"01-Jan-2020 00:00:00 +0000"') for index, name in enumerate(files, 1)]
    steps.append("s SELECT T")
    steps += [f"f{index} FETCH {index} {items}" for index in range(1, len(files) + 1)]
    return steps


scenario("corpus-bodystructure", _corpus_steps("(RFC822.SIZE BODYSTRUCTURE)"))
scenario("corpus-envelope", _corpus_steps("(ENVELOPE)"))
scenario("corpus-parts", _corpus_steps("(BODY.PEEK[1.MIME] BODY.PEEK[2.MIME] BODY.PEEK[1.1] BODY.PEEK[2.HEADER])"))

scenario("selected-updates", three() + [
    "s SELECT T", append("a4", "T", SIMPLE), "n1 NOOP", "e1 STORE 1:2 +FLAGS.SILENT (\\Deleted)", "e2 EXPUNGE",
    "e3 FETCH 1:* (UID FLAGS)", "u1 UID SEARCH ALL", "st STATUS T (UIDNEXT MESSAGES UNSEEN)",
    ("other", "o1 SELECT T"), ("other", "o2 STORE 1 +FLAGS (\\Seen)"), ("other", append("o3", "T", SECOND)),
    ("other", "o4 STORE 2 +FLAGS (\\Deleted)"), ("other", "o5 EXPUNGE"),
    "f1 FETCH 1 FLAGS", "f2 UID FETCH 1:* FLAGS", "n2 NOOP", "f3 FETCH 1:* UID", "c1 CHECK",
    ("other", "o6 STORE 1 FLAGS (\\Answered)"), "x1 UID STORE 3 +FLAGS (\\Flagged)", "n3 NOOP",
    ("other", "o7 UID EXPUNGE 3"), "x2 UID SEARCH ALL", "x3 UID FETCH 1:* UID", "x4 UID COPY 1:* INBOX", "n4 NOOP",
    "cl CLOSE", "n5 NOOP", "ex EXAMINE T", "fx FETCH 1 BODY[]", "fy FETCH 1 FLAGS", "fz STORE 1 +FLAGS (\\Seen)",
    "ux UNSELECT", "uy UNSELECT",
])

scenario("uidplus", [
    "c CREATE T", "d CREATE D", append("a1", "T", SIMPLE), append("a2", "T", SECOND), append("a3", "T", THIRD),
    append("a4", "T", SIMPLE), append("a5", "T", SECOND), "s SELECT T", "x1 COPY 1:3,5 D", "x2 UID COPY 5,3,1 D",
    "x3 COPY 5,1 D", "st STORE 2,4 +FLAGS.SILENT (\\Deleted)", "x4 UID EXPUNGE 1:3", "f FETCH 1:* (UID FLAGS)",
    "x5 UID EXPUNGE 4:*", "x6 MOVE 1:* D", "x7 STATUS D (MESSAGES UIDNEXT)", "x8 UID EXPUNGE 1", "x9 UID EXPUNGE abc",
    b"x10 APPEND D (\\Seen) {5}\r\nhello {5}\r\nworld", "x11 COPY 1 D",
])

scenario("search-more", three() + [
    "s SELECT T", "a SEARCH UID 1:2 NOT UID 2", "b SEARCH 2:1", "c SEARCH *:2", "d UID SEARCH *", "e SEARCH OR SEEN OR FLAGGED DELETED",
    "f SEARCH NOT (OR 1 2)", "g SEARCH (SEEN) (NOT SEEN)", "h SEARCH HEADER SUBJECT Hello", "i SEARCH HEADER FROM \"\"",
    "j SEARCH HEADER X-Missing \"\"", "k SEARCH SUBJECT \"world\" FROM \"alice\"", "l SEARCH TEXT \"inner body\"",
    "m SEARCH BODY \"Hello Bob\"", "n SEARCH BODY Subject", "o SEARCH TEXT Subject", "p SEARCH SENTSINCE 1-Jan-1990 SENTBEFORE 9-Feb-1994",
    "q SEARCH SINCE 1-Jan-2020", "r SEARCH BEFORE 1-Jan-2100", "t SEARCH UNSEEN UNDELETED", "u SEARCH LARGER 0 SMALLER 100000",
    "v SEARCH UNKEYWORD nope", "w SEARCH KEYWORD \\Seen", "x SEARCH SUBJECT cafe", "y SEARCH FROM \"Alice <alice\"",
    "z SEARCH TO \"carl c\"", "za SEARCH FROM ALICE@EXAMPLE.ORG", "zb SEARCH CHARSET UTF-8 ALL", "zc SEARCH CHARSET \"UTF-8\" ALL",
    "zd SEARCH UID 4", "ze SEARCH UID 1:* 2", "zf SEARCH OR", "zg SEARCH NOT", "zh SEARCH SEEN)", "zi SEARCH (SEEN",
    "zj SEARCH 1,,2", "zk SEARCH 0", "zl UID SEARCH UID 0:3",
])

scenario("errors", three() + [
    "s SELECT T", "a FETCH 1 (UID", "b FETCH 1 BODY[HEADER.FIELDS]", "c FETCH 1 BODY[TEXT.FOO]", "d STORE 1 +FLAGS",
    "e STORE 1 FLAGS.FOO (x)", "f COPY 1", "g COPY 1:2 \"\"", "h CREATE", "i RENAME a", "j STATUS T", "k LIST \"\"",
    "l LSUB", "m SUBSCRIBE", "n EXAMINE", "o UID FETCH", "p UID FETCH 1", "q UID EXPUNGE", "r SELECT T extra",
    "t FETCH 1 BODY[]<1>", "u FETCH 1 BODY[]<a.2>", "v FETCH 1 RFC822.PEEK", "w FETCH 1 (FLAGS FLAGS)", "x FETCH 1 ()",
    "y FETCH 1:2:3 FLAGS", "z FETCH 1.5 FLAGS", "aa NOOP\tx", "ab LOGOUT extra", "ac FETCH 1 BODY.PEEK[HEADER.FIELDS (a b)",
    "ad FETCH 1 BODY.PEEK[HEADER.FIELDS (\"\")]", "ae FETCH 1 BODY.PEEK[HEADER.FIELDS (a]b)]", "af FETCH 1 binary.peek[]",
    "ag FETCH 1 BINARY.SIZE[1]", "ah FETCH 1 BODY[MIME]", "ai FETCH 1 BODY[1.2.MIME]",
])

scenario("logout", ["a LOGOUT", "b NOOP"])

scenario("auth", [
    ("nologin", ""), "a AUTHENTICATE PLAIN AHVzZXI3AHBhc3M=", "b LOGOUT",
])
scenario("auth2", [
    ("nologin", ""), ("raw", b"a AUTHENTICATE PLAIN\r\n"), ("read", 0.5), ("raw", b"AHVzZXI3AHdyb25n\r\n"), ("read", 0.5),
    ("raw", b"b AUTHENTICATE PLAIN\r\n"), ("read", 0.5), ("raw", b"*\r\n"), ("read", 0.5),
    ("raw", b"c AUTHENTICATE PLAIN =\r\n"), ("read", 0.5), "d AUTHENTICATE PLAIN AHVzZXI3AHBhc3M", "e LOGIN {5+}\r\nuser7 {4+}\r\npass",
    "f ENABLE CONDSTORE", "g ID (\"a\" NIL)", "h ID (\"a\")", "i ID ()", "j NAMESPACE", "k ENABLE",
])
scenario("idle2", [
    ("raw", b"i IDLE\r\n"), ("read", 0.5), ("raw", b"done\r\n"), ("read", 0.5), "c1 CREATE T", "s SELECT T",
    ("raw", b"j IDLE\r\n"), ("read", 0.5), ("other", append("o1", "T", SIMPLE)), ("read", 1.5), ("raw", b"DONE\r\n"), ("read", 0.5),
    ("raw", b"k IDLE\r\n"), ("read", 0.5), ("raw", b"NOOP\r\n"), ("read", 0.5), "l NOOP",
])
scenario("pipeline", [
    "c1 CREATE T", ("raw", b"p1 SELECT T\r\np2 APPEND T {5+}\r\nhello\r\np3 FETCH 1:* (FLAGS UID)\r\np4 STORE 1 +FLAGS (\\Seen)\r\np5 NOOP\r\n"),
    ("read", 1.5),
])

scenario("mailboxes2", [
    b'a CREATE "caf\xc3\xa9"', 'b CREATE "a%b"', 'c CREATE "x*y"', "d CREATE p/q", "e DELETE p", 'f STATUS p (MESSAGES)',
    "g SELECT p", "h EXAMINE p", "i SUBSCRIBE p", "j RENAME p/q p/q/r", "k CREATE d1", "l SELECT d1", "m DELETE d1",
    "n NOOP", "o FETCH 1 FLAGS", 'p LIST "" "&"', 'q LIST "" "&-*"', "r CREATE \"&-\"", 's LIST "" "&-"',
    "t CREATE ~x", "u CREATE {2}\r\nab", 'v LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))', "w RENAME INBOX/x y",
    "x CREATE INBOX/x", "y RENAME INBOX/x y", 'z LIST "" "*"', "za CREATE Inbox/z", 'zb LIST "" "inbox*"',
])

scenario("condstore", three() + [
    "e ENABLE CONDSTORE", "s SELECT T", "a FETCH 1:* (MODSEQ)", "b STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)",
    "c STORE 1:3 (UNCHANGEDSINCE 99999) +FLAGS.SILENT (\\Answered)", "d FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
    "f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 99999)", "g SEARCH MODSEQ 99999", "h STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)",
    "i STATUS INBOX (HIGHESTMODSEQ)", "j FETCH 1 (MODSEQ) (FOO)", "k UID STORE 1,2 (UNCHANGEDSINCE 1) FLAGS (x)",
])
