-- Schema version 1 of the kps store (store/postgres.rs). Runs inside the migration transaction, under the
-- advisory lock, after the schema `kps` exists.

-- Every space but Counters: bytea keys, so the primary key's order is sled's byte order.
CREATE TABLE kps.entries (
    space smallint NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (space, key)
);

-- Space::Counters, written only by WriteOp::Add.
CREATE TABLE kps.counters (
    key bytea PRIMARY KEY,
    value bigint NOT NULL
);

-- Record ids: unique across replicas, never reused (a sequence never goes back, also not after a crash).
CREATE SEQUENCE kps.record_ids AS bigint START 1 MINVALUE 1;

-- One Store::apply batch, in order, in the caller's transaction (one statement: one transaction). A failed
-- precondition raises SQLSTATE KP001 with the operation's index (from 0) as its message, which rolls back
-- everything the batch wrote. kinds: 1 PutIfAbsent, 2 Replace, 3 Delete, 4 Add (a counter).
CREATE FUNCTION kps.apply(
    kinds smallint[], spaces smallint[], keys bytea[], expected bytea[], vals bytea[], deltas bigint[],
    maxes bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    counter bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(kinds, 1), 0) LOOP
        IF kinds[i] = 1 THEN
            INSERT INTO kps.entries (space, key, value) VALUES (spaces[i], keys[i], vals[i])
                ON CONFLICT DO NOTHING;
        ELSIF kinds[i] = 2 THEN
            UPDATE kps.entries SET value = vals[i]
                WHERE space = spaces[i] AND key = keys[i] AND value = expected[i];
        ELSIF kinds[i] = 3 THEN
            DELETE FROM kps.entries WHERE space = spaces[i] AND key = keys[i] AND value = expected[i];
        ELSE
            INSERT INTO kps.counters AS c (key, value) VALUES (keys[i], deltas[i])
                ON CONFLICT (key) DO UPDATE SET value = c.value + excluded.value
                RETURNING c.value INTO counter;
            IF counter < 0 OR counter > coalesce(maxes[i], counter) THEN
                RAISE EXCEPTION USING ERRCODE = 'KP001', MESSAGE = (i - 1)::text;
            END IF;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'KP001', MESSAGE = (i - 1)::text;
        END IF;
    END LOOP;
END
$$;
