-- Store::read: a verification's public fields (ARGV: record.rs's
-- READ_FIELDS) and its attempts, read in one atomic step. It writes
-- nothing and needs no prelude: verifyd works out expiry from the fields.
return { redis.call('HMGET', KEYS[1], unpack(ARGV)), redis.call('LRANGE', KEYS[2], 0, -1) }
