"""The SQLite schema, as numbered migrations applied in order (``PRAGMA user_version``)."""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: profiles, subscriptions, suppression, segments, mailings, runs, recipients.
    """
    CREATE TABLE databases (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE profiles (
        id INTEGER PRIMARY KEY,
        database_id INTEGER NOT NULL REFERENCES databases(id),
        phone TEXT,
        email TEXT,
        fields BLOB NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX profiles_database ON profiles(database_id, id);
    CREATE INDEX profiles_phone ON profiles(database_id, phone);
    CREATE INDEX profiles_email ON profiles(database_id, email);
    CREATE TABLE resources (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE subscriptions (
        id INTEGER PRIMARY KEY,
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        resource_id INTEGER NOT NULL REFERENCES resources(id),
        channel TEXT NOT NULL DEFAULT 'sms',
        phone TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'subscribed',
        priority INTEGER NOT NULL DEFAULT 0,
        fields BLOB,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (profile_id, resource_id, channel, phone)
    );
    CREATE INDEX subscriptions_pick
        ON subscriptions(profile_id, resource_id, channel, status, priority DESC);
    CREATE TABLE suppression_lists (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        is_global INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL
    );
    CREATE TABLE suppressions (
        list_id INTEGER NOT NULL REFERENCES suppression_lists(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        added_at REAL NOT NULL,
        PRIMARY KEY (value, kind, list_id)
    ) WITHOUT ROWID;
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        database_id INTEGER NOT NULL REFERENCES databases(id),
        kind TEXT NOT NULL DEFAULT 'static',
        condition TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE segment_members (
        segment_id INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
        profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        PRIMARY KEY (segment_id, profile_id)
    ) WITHOUT ROWID;
    CREATE TABLE mailings (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        resource TEXT NOT NULL,
        source_kind TEXT NOT NULL,
        database_id INTEGER NOT NULL REFERENCES databases(id),
        segment_id INTEGER REFERENCES segments(id),
        template TEXT NOT NULL,
        limit_n INTEGER,
        document BLOB NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        mailing_id INTEGER NOT NULL REFERENCES mailings(id),
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        checkpoint INTEGER NOT NULL DEFAULT 0,
        next_seq INTEGER NOT NULL DEFAULT 1,
        audience_done INTEGER NOT NULL DEFAULT 0,
        counts BLOB NOT NULL DEFAULT '{}',
        timings BLOB NOT NULL DEFAULT '{}',
        pid INTEGER,
        host TEXT,
        error TEXT
    );
    -- One row per recipient whose fate is known. Written once per message, when settled.
    CREATE TABLE recipients (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        seq INTEGER NOT NULL,
        profile_id INTEGER NOT NULL,
        phone TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        sender TEXT,
        segments INTEGER,
        encoding TEXT,
        provider_id TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    -- Reserved batches whose fate is not yet recorded: the run's write-ahead journal.
    -- A batch with a row in journal_sending may have been handed to its gateway.
    CREATE TABLE journal (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        batch INTEGER NOT NULL,
        sender TEXT NOT NULL,
        messages BLOB NOT NULL,
        PRIMARY KEY (run_id, batch)
    );
    CREATE TABLE journal_sending (
        run_id INTEGER NOT NULL,
        batch INTEGER NOT NULL,
        PRIMARY KEY (run_id, batch)
    ) WITHOUT ROWID;
    """,
    # 2: delivery receipts: find recipients by provider id; keep receipts that arrive early.
    """
    CREATE INDEX recipients_provider ON recipients(provider_id)
        WHERE provider_id IS NOT NULL;
    CREATE TABLE receipts_pending (
        provider_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        error TEXT,
        at REAL,
        received_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: the HTTP API's bearer tokens (hashes only), and trigger mailings' queue.
    """
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT,
        role TEXT NOT NULL,
        group_name TEXT,
        hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    -- One row per trigger call's message; drained in id order by the mailing's pipeline.
    CREATE TABLE trigger_queue (
        id INTEGER PRIMARY KEY,
        mailing_id INTEGER NOT NULL REFERENCES mailings(id),
        run_id INTEGER NOT NULL REFERENCES runs(id),
        seq INTEGER NOT NULL,
        profile_id INTEGER NOT NULL,
        content BLOB NOT NULL DEFAULT '{}',
        idempotency_key TEXT,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX trigger_idempotency ON trigger_queue(mailing_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    """,
    # 4: suppression lists attached to databases or mailings (global lists apply everywhere).
    """
    CREATE TABLE suppression_attachments (
        list_id INTEGER NOT NULL REFERENCES suppression_lists(id) ON DELETE CASCADE,
        database_id INTEGER REFERENCES databases(id),
        mailing_id INTEGER REFERENCES mailings(id),
        CHECK ((database_id IS NULL) != (mailing_id IS NULL))
    );
    CREATE UNIQUE INDEX suppression_attachment_once
        ON suppression_attachments(list_id, coalesce(database_id, 0), coalesce(mailing_id, 0));
    """,
    # 5: sending policies: messages per profile / phone per UTC day; a mailing's policy.
    """
    ALTER TABLE mailings ADD COLUMN policy BLOB;
    CREATE TABLE history_profile (
        profile_id INTEGER NOT NULL,
        day INTEGER NOT NULL,
        resource_id INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (profile_id, day, resource_id)
    ) WITHOUT ROWID;
    CREATE TABLE history_contact (
        phone INTEGER NOT NULL,
        day INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (phone, day)
    ) WITHOUT ROWID;
    """,
    # 6: the image gallery: directories (a tree), images (blobs named by sha256), tags.
    """
    CREATE TABLE gallery_directories (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        parent_id INTEGER REFERENCES gallery_directories(id) ON DELETE CASCADE,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX gallery_directory_name
        ON gallery_directories(coalesce(parent_id, 0), name);
    CREATE TABLE gallery_images (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        directory_id INTEGER REFERENCES gallery_directories(id) ON DELETE CASCADE,
        sha256 TEXT NOT NULL,
        thumb_sha256 TEXT NOT NULL,
        -- The URL's last segment, fixed at upload: a rename keeps the URL.
        url_name TEXT NOT NULL,
        format TEXT NOT NULL,
        size INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX gallery_image_directory ON gallery_images(directory_id);
    CREATE INDEX gallery_image_sha256 ON gallery_images(sha256);
    CREATE TABLE gallery_tags (
        image_id INTEGER NOT NULL REFERENCES gallery_images(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (image_id, tag)
    ) WITHOUT ROWID;
    CREATE INDEX gallery_tag ON gallery_tags(tag);
    """,
    # 7: find subscriptions by phone (a STOP reply unsubscribes a phone everywhere).
    """
    CREATE INDEX subscriptions_phone ON subscriptions(phone, resource_id);
    """,
    # 8: receipts waiting for their message expire ([engine] receipt_ttl). The expiry is
    # fixed on arrival, so a process that records messages needs no ttl to honour it;
    # the arrival time is indexed too, for a ttl lowered since.
    """
    ALTER TABLE receipts_pending ADD COLUMN expires_at REAL NOT NULL DEFAULT 0;
    UPDATE receipts_pending SET expires_at = received_at + 604800.0;
    CREATE INDEX receipts_pending_expires ON receipts_pending(expires_at);
    CREATE INDEX receipts_pending_received ON receipts_pending(received_at);
    """,
    # 9: receipts belong to their gateway. A kept receipt is keyed by (gateway, provider
    # id); past the cap the oldest go first (by arrival, then rowid); each sender
    # maps to the one gateway whose receipts may move its recipients, written by whoever
    # takes receipts (it has the config), in the transaction that keeps them, so a process
    # that records messages needs no config to apply them. Receipts kept before say no
    # gateway: they are dropped, not guessed.
    """
    DROP TABLE receipts_pending;
    CREATE TABLE receipts_pending (
        gateway TEXT NOT NULL,
        provider_id TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        at REAL,
        received_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        UNIQUE (gateway, provider_id)
    );
    CREATE INDEX receipts_pending_expires ON receipts_pending(expires_at);
    CREATE INDEX receipts_pending_received ON receipts_pending(received_at);
    CREATE INDEX receipts_pending_age ON receipts_pending(gateway, received_at);
    CREATE TABLE receipt_senders (
        sender TEXT PRIMARY KEY,
        gateway TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 10: the tracking domain (``tracking.py``): the codes' secret, runs' short links and
    # the URLs of data slots, clicks; the event record (``events.py``); the report
    # counters, per run, sender and UTC hour (``engine.store.counters``).
    """
    CREATE TABLE tracking_secret (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        secret BLOB NOT NULL
    );
    -- A run's short links: its template's URLs, then its data slots (url NULL), one
    -- set per seq_base (codes carry seq - seq_base: a cluster chunk's seqs are large).
    CREATE TABLE links (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        position INTEGER NOT NULL,
        url TEXT,
        seq_base INTEGER NOT NULL DEFAULT 0,
        UNIQUE (run_id, seq_base, position)
    );
    CREATE TABLE data_links (
        link_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        url TEXT NOT NULL,
        PRIMARY KEY (link_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE clicks (
        id INTEGER PRIMARY KEY,
        link_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        ip TEXT,
        user_agent TEXT,
        bot INTEGER NOT NULL
    );
    -- The (link, seq) pairs a person has clicked: the next click is not unique.
    CREATE TABLE first_clicks (
        link_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (link_id, seq)
    ) WITHOUT ROWID;
    -- The event record. A message's mailing and id come from its run (runs.uid). Ids are
    -- rowids, never reused as events are never deleted (AUTOINCREMENT doubled the cost of
    -- a batch's events).
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        run_id INTEGER,
        seq INTEGER,
        profile_id INTEGER,
        phone TEXT NOT NULL,
        sender TEXT,
        error TEXT,
        url TEXT
    );
    CREATE INDEX events_run ON events(run_id, id) WHERE run_id IS NOT NULL;
    -- The messages sent to a profile: a STOP reply is credited to the last one sent to its
    -- phone. (Profiles come in id order, so this index grows at a few places, unlike one
    -- on phones, which cost a batch five times the rest of its events.)
    CREATE INDEX events_sent_profile ON events(profile_id, id) WHERE kind = 'send_sms';
    CREATE TABLE report_counts (
        run_id INTEGER NOT NULL,
        sender TEXT NOT NULL,
        hour INTEGER NOT NULL,
        recipients INTEGER NOT NULL DEFAULT 0,
        sent INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        undelivered INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        unknown INTEGER NOT NULL DEFAULT 0,
        segments INTEGER NOT NULL DEFAULT 0,
        clicks INTEGER NOT NULL DEFAULT 0,
        unique_clicks INTEGER NOT NULL DEFAULT 0,
        unsubscribed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, sender, hour)
    ) WITHOUT ROWID;
    CREATE INDEX report_counts_hour ON report_counts(hour);
    CREATE TABLE report_reasons (
        run_id INTEGER NOT NULL,
        sender TEXT NOT NULL,
        hour INTEGER NOT NULL,
        reason TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (run_id, sender, hour, reason)
    ) WITHOUT ROWID;
    CREATE TABLE report_urls (
        run_id INTEGER NOT NULL,
        url TEXT NOT NULL,
        hour INTEGER NOT NULL,
        clicks INTEGER NOT NULL,
        unique_clicks INTEGER NOT NULL,
        PRIMARY KEY (run_id, url, hour)
    ) WITHOUT ROWID;
    """,
    # 11: mailing kinds and schedules (issue 14): a mailing's options (variants, schedule,
    # control group, ...), its state and next launch; what each run is for (its spec).
    """
    ALTER TABLE mailings ADD COLUMN options BLOB NOT NULL DEFAULT '{}';
    ALTER TABLE mailings ADD COLUMN state TEXT NOT NULL DEFAULT 'draft';
    ALTER TABLE mailings ADD COLUMN next_launch REAL;
    CREATE INDEX mailings_due ON mailings(next_launch) WHERE next_launch IS NOT NULL;
    ALTER TABLE runs ADD COLUMN spec BLOB NOT NULL DEFAULT '{}';
    """,
    # 12: a launch's next steps (issue 14): the next test, wave or wait-then-winner,
    # taken by whichever scheduler runs next, so a stopped process loses none of them
    """
    CREATE TABLE launch_steps (
        id INTEGER PRIMARY KEY,
        mailing_id INTEGER NOT NULL REFERENCES mailings(id),
        kind TEXT NOT NULL DEFAULT 'run',
        spec BLOB NOT NULL DEFAULT '{}',
        after_run INTEGER REFERENCES runs(id),
        at REAL
    );
    CREATE INDEX launch_steps_mailing ON launch_steps(mailing_id);
    """,
    # 13: trigger calls held for their recipient's quiet hours (issue 14): the time each
    # may go (NULL: at once; 0: held, then released)
    """
    ALTER TABLE trigger_queue ADD COLUMN not_before REAL;
    CREATE INDEX trigger_queue_held ON trigger_queue(run_id, not_before)
        WHERE not_before > 0;
    """,
    # 14: profiles held out in control groups, in the report counters (issue 14)
    "ALTER TABLE report_counts ADD COLUMN control INTEGER NOT NULL DEFAULT 0;",
    # 15: action hooks (issue 15, ``hooks.py``): what an import event says (``data``, JSON)
    # and its database (an import has no profile); a trigger call's ``custom_data``, found
    # by (run, seq) for the hooks (indexed only where given: other calls pay nothing); a
    # cursor and lease per hook, and the batches given up on (dead letters).
    """
    ALTER TABLE events ADD COLUMN data TEXT;
    ALTER TABLE events ADD COLUMN database_id INTEGER;
    ALTER TABLE trigger_queue ADD COLUMN custom_data TEXT;
    CREATE INDEX trigger_queue_custom ON trigger_queue(run_id, seq)
        WHERE custom_data IS NOT NULL;
    CREATE TABLE hooks (
        name TEXT PRIMARY KEY,
        cursor_txid INTEGER NOT NULL DEFAULT 0,
        cursor_id INTEGER NOT NULL DEFAULT 0,
        owner TEXT NOT NULL DEFAULT '',
        lease_until REAL NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        failing_since REAL,
        delivered INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        hook TEXT NOT NULL,
        after_txid INTEGER NOT NULL,
        after_id INTEGER NOT NULL,
        upto_txid INTEGER NOT NULL,
        upto_id INTEGER NOT NULL,
        events INTEGER NOT NULL,
        error TEXT NOT NULL,
        first_failed REAL NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX dead_letters_hook ON dead_letters(hook, id);
    """,
    # 16: the email channel (issue 19): a mailing's audience channel (which subscriptions
    # it reads; ``subscriptions.phone`` holds an email subscription's normalised address);
    # email's counters; the opens of the tracking pixel and the (run, seq) a person has
    # opened; the messages sent to a profile by email (a bounce with no message id is
    # credited to the last one sent to its address); the bounces applied (the same report
    # twice changes nothing more), by kind, address and message (0, 0 for none); and the
    # email runs' contact history (``history_contact`` keys phones as integers).
    """
    ALTER TABLE mailings ADD COLUMN channel TEXT NOT NULL DEFAULT 'sms';
    ALTER TABLE report_counts ADD COLUMN opens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE report_counts ADD COLUMN unique_opens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE report_counts ADD COLUMN hard_bounced INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE report_counts ADD COLUMN soft_bounced INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE report_counts ADD COLUMN complaints INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE opens (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        ip TEXT,
        user_agent TEXT,
        bot INTEGER NOT NULL,
        prefetch INTEGER NOT NULL
    );
    CREATE TABLE first_opens (
        run_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_sent_email ON events(profile_id, id) WHERE kind = 'send';
    CREATE TABLE bounces (
        kind TEXT NOT NULL,
        address TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (kind, address, run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE history_address (
        address TEXT NOT NULL,
        day INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (address, day)
    ) WITHOUT ROWID;
    """,
    # 17: the contacts of the latest messages, appended in reservation order and folded
    # into ``history_contact`` / ``history_address`` in sorted bulk (policy.py says why);
    # ids never repeat, so that a reader can tell that the rows it read were folded.
    """
    CREATE TABLE history_recent (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        contact NOT NULL,
        day INTEGER NOT NULL
    );
    """,
]
