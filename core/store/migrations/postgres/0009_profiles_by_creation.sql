-- Profiles by creation time. Counting profiles (the status line, `/metrics`) read every document, the whole
-- table; SQLite counts from its smallest index instead, and this one is small and barely written: a
-- profile's creation time is set once, so updating a document leaves it alone.

CREATE INDEX profiles_by_creation ON profiles (created_at);
