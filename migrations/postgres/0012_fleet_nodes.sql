-- Every node of the fleet, as it last said (issue 36): the status page of
-- any node shows who is alive, who leads, under which term, on which
-- version. Each node writes its own row every few seconds (its
-- heartbeat); heartbeat_at is PostgreSQL's clock, so hosts' clocks never
-- matter when a node is judged stale. A node gone for a day is removed.
CREATE TABLE fleet_nodes (
    node         TEXT PRIMARY KEY,
    role         TEXT NOT NULL CHECK (role IN ('leader', 'follower')),
    term         BIGINT,
    version      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);
