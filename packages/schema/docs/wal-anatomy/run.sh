#!/bin/bash
# run.sh DB SCRIPT N CLIENTS
P="-h /tmp/pgx -p 55432 -U postgres"
db=$1; script=$2; n=$3; c=$4
psql -q $P -d $db -c "truncate job cascade" >/dev/null 2>&1; [ "$db" != cur ] && psql -q $P -d $db -c "truncate step_result, job_result" >/dev/null
[ "$db" != cur ] && psql -q $P -d $db -c "truncate step_queue" >/dev/null
psql -q $P -d $db -v n=$n -f seed.sql >/dev/null
[ "$db" != cur ] && psql -q $P -d $db -f seedq.sql >/dev/null
psql -q $P -d $db -c "vacuum analyze" -c "checkpoint" >/dev/null
psql -q $P -d $db -c "select pg_stat_reset_shared('wal')" >/dev/null
lsn0=$(psql -tA $P -d $db -c "select pg_current_wal_lsn()")
out=$(/usr/lib/postgresql/15/bin/pgbench $P -n -c $c -j 2 -t $((n / c)) -f $script $db 2>&1)
lsn1=$(psql -tA $P -d $db -c "select pg_current_wal_lsn()")
wal=$(psql -tA $P -d $db -c "select pg_wal_lsn_diff('$lsn1','$lsn0')")
stats=$(psql -tA $P -d $db -c "select wal_records/$n, wal_fpi, round(wal_bytes/$n) from pg_stat_wal")
left=$(psql -tA $P -d $db -c "select count(*) from job where status <> 'completed'")
tps=$(echo "$out" | grep -oP 'tps = \K[0-9.]+' | head -1)
echo "$script c=$c tps=$tps wal/job=$(echo "scale=0; $wal / $n" | bc) unfinished=$left recs/job,fpi,bytes/job=$stats $(echo "$out" | grep -i "error\|fail" | head -2)"
