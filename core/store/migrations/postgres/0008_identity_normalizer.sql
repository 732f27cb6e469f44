-- The version of identifier normalisation the profiles were built with. A build whose normaliser gives
-- different values (a newer phone library, say) resolves every record again once, then records its own.
-- Stores from before this counter start at 0, which every build treats as outdated.

INSERT INTO counters (name, value) VALUES ('identity_normalizer', 0);
