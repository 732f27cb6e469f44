-- A fingerprint of the rules the profiles were built with (`[identity]` and `[profiles]`). Resolution
-- steps only re-resolve the records they touch, so profiles built under other rules would keep the old
-- answer until a full pass: a resolution that finds other rules than these runs one, then records its own.
-- Stores from before this counter start at 0, which no rules give.

INSERT INTO counters (name, value) VALUES ('identity_rules', 0);
