-- A fingerprint of each profile's content (its document but for when its computed traits were evaluated,
-- its search text and its rows), given by the writer. A write whose fingerprint and held rows equal the
-- stored ones leaves the row alone: a rebuild that changes few profiles rewrites few rows, and a
-- profile's `updated_at` (its version, which syncs diff by) moves only when it changes. Profiles written
-- before this have none, so their next write rewrites them (and each sync diffs them once).

ALTER TABLE profiles ADD COLUMN fingerprint BIGINT;
