"""The PostgreSQL store's tables, and the migrations that make them.

One database holds every user: each row names its owner (a user's tree)
or its mailbox.  Message bodies live once each in ``blobs``, by the SHA-256
of their bytes, counted by the messages that use them (the bytes in the row,
or in a file of a shared folder: :mod:`cyrusmail.store.postgresql.blobs`).

Migrations: ``schema_migrations`` lists the versions applied; opening the
store applies the missing ones in order, each in its own transaction, under
an advisory lock, so that several servers starting at once apply each once.
A migration is never edited once released: a change is a new one.
"""

from __future__ import annotations

#: Taken (pg_advisory_xact_lock) while migrating: one server migrates, the others wait.
MIGRATION_LOCK = 0x6379_7275_736D  # "cyrusm"

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE users (
    name         text PRIMARY KEY,
    provisioned  boolean NOT NULL DEFAULT false,
    uidvalidity  bigint NOT NULL DEFAULT 0  -- the last given: kept when the user is removed
);
CREATE TABLE mailboxes (
    id             bigserial PRIMARY KEY,
    owner          text NOT NULL,
    name           text NOT NULL,
    selectable     boolean NOT NULL DEFAULT true,
    special_use    text,
    objectid       text NOT NULL,
    uidvalidity    bigint NOT NULL,
    uidnext        bigint NOT NULL DEFAULT 1,
    highestmodseq  bigint NOT NULL DEFAULT 1,
    recent_uid     bigint NOT NULL DEFAULT 0,
    messages       bigint NOT NULL DEFAULT 0,
    unseen         bigint NOT NULL DEFAULT 0,
    size           bigint NOT NULL DEFAULT 0,
    UNIQUE (owner, name)
);
CREATE TABLE blobs (
    sha   text PRIMARY KEY,  -- SHA-256 of data, hex
    data  bytea NOT NULL,
    refs  bigint NOT NULL    -- messages using it; the row goes at 0
);
CREATE TABLE messages (
    mailbox_id    bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid           bigint NOT NULL,
    guid          text NOT NULL,
    blob          text NOT NULL,
    size          bigint NOT NULL,
    internaldate  double precision NOT NULL,
    flags         integer NOT NULL,
    keywords      text NOT NULL DEFAULT '',
    modseq        bigint NOT NULL,
    savedate      double precision NOT NULL,
    emailid       text NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
CREATE TABLE mime (
    mailbox_id  bigint NOT NULL,
    uid         bigint NOT NULL,
    cache       bytea NOT NULL,
    preview     text,
    PRIMARY KEY (mailbox_id, uid),
    FOREIGN KEY (mailbox_id, uid) REFERENCES messages ON DELETE CASCADE
);
CREATE TABLE sortdata (
    mailbox_id    bigint NOT NULL,
    uid           bigint NOT NULL,
    sent          double precision,
    subject       text NOT NULL,
    reply         integer NOT NULL,
    from_key      text NOT NULL,
    to_key        text NOT NULL,
    cc_key        text NOT NULL,
    display_from  text NOT NULL,
    display_to    text NOT NULL,
    message_id    text,
    refs          text NOT NULL,
    PRIMARY KEY (mailbox_id, uid),
    FOREIGN KEY (mailbox_id, uid) REFERENCES messages ON DELETE CASCADE
);
CREATE TABLE expunged (
    mailbox_id  bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid         bigint NOT NULL,
    modseq      bigint NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_modseq ON expunged (mailbox_id, modseq);
CREATE TABLE expunged_floor (
    mailbox_id  bigint PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    floor       bigint NOT NULL,
    rows        bigint NOT NULL
);
CREATE TABLE subscriptions (
    owner  text NOT NULL,
    name   text NOT NULL,
    PRIMARY KEY (owner, name)
);
"""),
    (2, """
-- A mailbox's ACL (RFC 4314) as JSON {identifier: rights}; no row: the default ACL.
CREATE TABLE acls (
    mailbox_id  bigint PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    entries     text NOT NULL
);
-- Quota limits (RFC 9208) of an owner's roots: '' is the whole tree, 'news' covers news/...
CREATE TABLE quota_limits (
    owner     text NOT NULL,
    root      text NOT NULL,
    resource  text NOT NULL,
    value     bigint NOT NULL,
    PRIMARY KEY (owner, root, resource)
);
-- A reader's own Seen flags on mailboxes of another tree (shared folders).
CREATE TABLE private_seen (
    reader       text NOT NULL,
    mailbox_id   bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uidvalidity  bigint NOT NULL,
    uid          bigint NOT NULL,
    PRIMARY KEY (reader, mailbox_id, uid)
);
"""),
    (3, """
-- The user database (cyrusmail.auth.userdb) that every server shares: scrypt hashes only.
CREATE TABLE accounts (
    name      text PRIMARY KEY,
    password  text NOT NULL,
    created   double precision NOT NULL
);
"""),
    (4, """
-- Counts ACL changes, so that a session's cached rights know when to read them again.
ALTER TABLE mailboxes ADD COLUMN acl_version bigint NOT NULL DEFAULT 0;
"""),
    (5, """
-- SCRAM-SHA-256 keys beside the scrypt hash (cyrusmail.auth.scram), and the
-- one random key an unknown user's stand-in salt is made from, as in users.sqlite.
ALTER TABLE accounts ADD COLUMN scram text;
CREATE TABLE secrets (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);
"""),
    (6, """
-- Groups and who shares with whom (cyrusmail.acl.registry), as access.sqlite
-- holds them on the embedded store: one record that every server reads.
CREATE TABLE groups (
    name    text NOT NULL,
    member  text NOT NULL,
    PRIMARY KEY (name, member)
);
CREATE INDEX groups_member ON groups (member);
CREATE TABLE grants (
    owner       text NOT NULL,
    identifier  text NOT NULL,
    PRIMARY KEY (owner, identifier)
);
CREATE INDEX grants_identifier ON grants (identifier);
-- Counts changes to both, so that a session's kept rights know when to read groups again.
CREATE TABLE access_version (version bigint NOT NULL);
INSERT INTO access_version VALUES (0);
-- The identifiers the ACLs set so far name (until now each server kept them in its own file).
INSERT INTO grants (owner, identifier)
    SELECT DISTINCT m.owner, ltrim(e.key, '-')
    FROM acls AS a JOIN mailboxes AS m ON m.id = a.mailbox_id, json_each_text(a.entries::json) AS e
    WHERE ltrim(e.key, '-') <> m.owner;
"""),
    (7, """
-- Recent failed logins per account (cyrusmail.auth.throttle), which every server's throttle consults.
CREATE TABLE login_failures (
    account   text PRIMARY KEY,
    failures  double precision NOT NULL,  -- as of updated; one is forgotten every forget seconds
    updated   double precision NOT NULL,  -- seconds since the epoch
    until     double precision NOT NULL   -- when every one is forgotten: the row may go
);
CREATE INDEX login_failures_until ON login_failures (until);
"""),
    (8, """
-- [store] blobs = a folder: a body's bytes in a file named by its hash, the row keeping
-- its hash, size and count (data NULL); rows of the database keep their bytes.
ALTER TABLE blobs ALTER COLUMN data DROP NOT NULL;
ALTER TABLE blobs ADD COLUMN size bigint;
"""),
    (9, """
-- The outbound queue every server shares (cyrusmail.store.postgresql.queue): the envelope
-- as QueueEntry.to_json() gives it, the message in blobs (one reference); an attempt claims
-- the row (claimed_by, until claimed_until: the queue clock's seconds, renewed as it runs).
CREATE TABLE queue (
    id             text PRIMARY KEY,
    blob           text NOT NULL,
    envelope       text NOT NULL,
    arrival        double precision NOT NULL,
    next_attempt   double precision NOT NULL,
    claimed_by     text,
    claimed_until  double precision NOT NULL DEFAULT 0
);
CREATE INDEX queue_due ON queue (next_attempt);
"""),
    (10, """
-- Sieve scripts (cyrusmail.store.postgresql.sieve): each user's, by name, at most one active,
-- and the vacation replies sent (RFC 5230 section 4.2: whom, under which handle, until when not again).
CREATE TABLE sieve_scripts (
    owner    text NOT NULL,
    name     text NOT NULL,
    content  text NOT NULL,
    active   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (owner, name)
);
CREATE UNIQUE INDEX sieve_scripts_active ON sieve_scripts (owner) WHERE active;
CREATE TABLE sieve_vacation (
    owner   text NOT NULL,
    handle  text NOT NULL,
    sender  text NOT NULL,
    until   double precision NOT NULL,
    PRIMARY KEY (owner, handle, sender)
);
CREATE INDEX sieve_vacation_until ON sieve_vacation (owner, until);
"""),
    (11, """
-- Mailboxes deleted with [server] delete_mode = delayed, kept for cyrusmail-admin undelete: the mailbox
-- row (and its messages, flags, ACL) stays, owned by '.deleted' under its id; this says whose it was.
CREATE TABLE kept_mailboxes (
    mailbox_id  bigint PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    owner       text NOT NULL,
    name        text NOT NULL,
    deleted     double precision NOT NULL,
    subscribed  boolean NOT NULL
);
CREATE INDEX kept_mailboxes_owner ON kept_mailboxes (owner, deleted);
"""),
]
