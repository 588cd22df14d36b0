// A day in the life of ImapFlow (a Node.js IMAP client that sends ENABLE IMAP4rev2 after login
// when the server offers it) against the server at IMAP_PORT on 127.0.0.1, user alice/secret.
// Prints one JSON object: what the session enabled, what each step gave, and every line the
// server sent; tests/test_imap_clients.py checks them. Exits 1 with the error on a failure.
import { ImapFlow } from 'imapflow';

const received = [];
const client = new ImapFlow({
    host: '127.0.0.1',
    port: Number(process.env.IMAP_PORT),
    secure: false,
    doSTARTTLS: false,
    auth: { user: 'alice', pass: 'secret' },
    logger: {
        // each response the server sent, as ImapFlow parsed it (FETCH responses at trace level)
        debug: entry => entry && entry.src === 's' && received.push(entry.msg),
        trace: entry => entry && entry.src === 's' && received.push(entry.msg),
        info: () => {},
        warn: () => {},
        error: () => {}
    }
});

const message = (subject) =>
    `From: carol@example.org\r\nTo: alice@example.org\r\nSubject: ${subject}\r\n` +
    `Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <${subject}@example.org>\r\n\r\nHi there.\r\n`;

const result = {};
try {
    await client.connect();
    result.enabled = [...client.enabled].sort();
    result.created = (await client.mailboxCreate(['Café', 'Thé'])).path;
    result.listed = (await client.list()).map(box => box.path).sort();
    result.appended = [
        (await client.append('INBOX', message('First'), ['\\Seen', '$Junk'])).uid,
        (await client.append('INBOX', message('Second'))).uid
    ];
    const box = await client.mailboxOpen('INBOX');
    result.exists = box.exists;
    result.unseen = await client.search({ seen: false });
    result.junk_uids = await client.search({ keyword: '$Junk' }, { uid: true });
    result.nothing = await client.search({ subject: 'nowhere' });
    result.flags = [];
    for await (const msg of client.fetch('1:*', { uid: true, flags: true, envelope: true })) {
        result.flags.push([msg.uid, [...msg.flags].sort(), msg.envelope.subject]);
    }
    result.status = await client.status('INBOX', { messages: true, unseen: true, uidNext: true });
    result.moved = (await client.messageMove('1', 'Café/Thé')).uidMap ? 'uidMap' : 'none';
    result.deleted = await client.messageDelete('1');
    result.after = (await client.status('INBOX', { messages: true })).messages;
    result.target = (await client.mailboxOpen('Café/Thé')).exists;
    await client.logout();
    result.received = received;
    console.log(JSON.stringify(result));
} catch (error) {
    console.log(JSON.stringify({ error: String(error && (error.stack || error)), result, received }));
    process.exit(1);
}
