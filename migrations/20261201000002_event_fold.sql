-- The game as a fold of events in send order (SPEC §3 "Order of events", §9 "No message waits").
--
-- Every press and purchase is kept as an event, keyed by its position in send order
-- (username, SentTimestamp, MessageId), with its verdict and the player's state right after it
-- (a checkpoint). A player's `users` row is the fold of its events up to `folded_to`; an event
-- that lands behind that point, a round announced late or an earlier registration makes the
-- handler judge the player's events again from the checkpoint before it (`refold_from_ms`).
-- Events of names that are not registered wait here (outcome NULL) until the name registers or
-- they expire. Replaces the order-dependent `scores`, `powerups` and `rejected_purchases`
-- tables (kept as read-only views of the same columns).
--
-- Upgrading from the previous schema: stop every incoming handler of the previous version
-- first (it writes the old tables); this migration converts the old ledgers into events and
-- marks their players for a re-fold, which the new handler does as soon as it runs.
--
-- Runs on MariaDB >= 10.8 and Aurora MySQL 8.

CREATE TABLE player_events (
    username          VARBINARY(512)   NOT NULL,
    -- The message's SQS SentTimestamp (epoch ms) and MessageId: its place in send order.
    sent_at_ms        BIGINT           NOT NULL,
    message_id        VARBINARY(128)   NOT NULL,
    kind              ENUM('PRESS', 'PURCHASE') NOT NULL,
    -- A purchase: what, and the SHA-256 of `req:<request_id>` (or `msg:<MessageId>`).
    powerup_kind      ENUM('FREEZE', 'MULTIPLIER', 'EXTENDER') NULL,
    tier              TINYINT UNSIGNED NULL,
    request_key       BINARY(32)       NULL,
    -- The verdict: NULL while the name is not registered; else `scored`, `bought`, or the
    -- reason of a rejection (`unknown_user`, `no_round`, `too_late`, `already_scored`,
    -- `insufficient_points`, `duplicate_purchase`).
    outcome           VARCHAR(24)      NULL,
    -- A scored press: its round, the streak it made and its points. A bought powerup: its
    -- price (in `points`) and when it expires.
    round_opens_at_ms BIGINT           NULL,
    streak            INT UNSIGNED     NULL,
    points            BIGINT           NULL,
    expires_at_ms     BIGINT           NULL,
    -- The player's state right after this event: where a re-fold can start.
    score_after       BIGINT           NOT NULL DEFAULT 0,
    streak_after      INT UNSIGNED     NOT NULL DEFAULT 0,
    last_scored_after BIGINT           NULL,
    -- When a handler first stored it (how late events arrive; not part of the game).
    received_at_ms    BIGINT           NOT NULL,
    PRIMARY KEY (username, sent_at_ms, message_id),
    KEY player_events_by_round (username, round_opens_at_ms),
    KEY player_events_by_request (username, request_key),
    KEY player_events_by_outcome (outcome, sent_at_ms)
) ENGINE = InnoDB;

ALTER TABLE users
    -- The earliest registration's SentTimestamp and MessageId.
    ADD COLUMN registered_at_ms  BIGINT         NOT NULL DEFAULT 0,
    ADD COLUMN registered_msg_id VARBINARY(128) NOT NULL DEFAULT '',
    -- The latest event folded into score/streak/last_scored (NULL: none yet).
    ADD COLUMN folded_to_ms      BIGINT         NULL,
    ADD COLUMN folded_to_msg     VARBINARY(128) NULL,
    -- Events sent at or after this instant must be judged again (NULL: up to date).
    ADD COLUMN refold_from_ms    BIGINT         NULL,
    ADD KEY users_by_folded_to (folded_to_ms),
    ADD KEY users_to_refold (refold_from_ms);

-- The base press window of a round (what an extender stretches); NULL: closes - opens.
ALTER TABLE rounds ADD COLUMN window_ms BIGINT NULL;

-- Push tokens follow send order: the endpoint carries the token of the latest-sent
-- registration, whatever order registrations are delivered in.
ALTER TABLE push_endpoints
    MODIFY endpoint_arn VARCHAR(1024) NULL,
    ADD COLUMN token            BLOB           NULL,
    ADD COLUMN token_sent_at_ms BIGINT         NOT NULL DEFAULT 0,
    ADD COLUMN token_msg_id     VARBINARY(128) NOT NULL DEFAULT '';

-- The old ledgers become events, judged again by the new handler.
INSERT IGNORE INTO player_events (username, sent_at_ms, message_id, kind, received_at_ms)
SELECT username, pressed_at_ms, message_id, 'PRESS', 0 FROM scores;

INSERT IGNORE INTO player_events
    (username, sent_at_ms, message_id, kind, powerup_kind, tier, request_key, received_at_ms)
SELECT username, starts_at_ms, message_id, 'PURCHASE', kind, tier, UNHEX(SHA2(request_key, 256)), 0
FROM powerups;

UPDATE users u SET u.refold_from_ms = -9223372036854775808
WHERE EXISTS (SELECT 1 FROM player_events e WHERE e.username = u.username);

DROP TABLE scores;
DROP TABLE powerups;
DROP TABLE rejected_purchases;

-- Read-only views with the old tables' columns, for reports and tools.
CREATE VIEW scores AS
SELECT e.username, e.round_opens_at_ms, r.round_id, e.sent_at_ms AS pressed_at_ms, e.streak,
       e.points, e.message_id
FROM player_events e
JOIN rounds r ON r.opens_at_ms = e.round_opens_at_ms
WHERE e.outcome = 'scored';

CREATE VIEW powerups AS
SELECT username, request_key, powerup_kind AS kind, tier, points AS price,
       sent_at_ms AS starts_at_ms, expires_at_ms, message_id
FROM player_events
WHERE outcome = 'bought';
