-- Each profile lists the member and identifier rows it holds (`held_rows`, JSON), written with its
-- document. Resolution finds a profile's rows from that list, so the two indexes by profile go: every
-- step touched a page of each for every profile it wrote, and a full pass spent a second building them.
-- Existing profiles get their lists from the rows, through those indexes, before the indexes go. Rows
-- of a profile that no longer exists (no write leaves any) would be found by no list: they go first.

DELETE FROM profile_members WHERE profile_id NOT IN (SELECT id FROM profiles);
DELETE FROM profile_identifiers WHERE profile_id NOT IN (SELECT id FROM profiles);
ALTER TABLE profiles ADD COLUMN held_rows TEXT NOT NULL DEFAULT '{}';
UPDATE profiles SET held_rows = json_build_object(
    'members', COALESCE((SELECT json_agg(json_build_array(source, stream, external_id)
                                         ORDER BY source, stream, external_id)
                         FROM profile_members WHERE profile_id = profiles.id), '[]'::json),
    'identifiers', COALESCE((SELECT json_agg(json_build_array(id_type, id_value)
                                             ORDER BY id_type, id_value)
                             FROM profile_identifiers WHERE profile_id = profiles.id), '[]'::json)
)::text;
DROP INDEX profile_members_by_profile;
DROP INDEX profile_identifiers_by_profile;
