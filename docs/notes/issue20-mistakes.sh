#!/bin/bash
# usage: mistakes.sh BINARY  -- prints each mistake's start-up output and exit code
B=$1
W=$(mktemp -d)
python3 "$(dirname "$0")"/issue20-imds403.py 18999 & IMDS=$!
sleep 0.5
export HOME=$W/home; mkdir -p $HOME
unset AWS_CA_BUNDLE
E="env -u AWS_REGION -u AWS_DEFAULT_REGION AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:18999"
run() { local title=$1; shift; echo "### $title"; echo '```'; echo "\$ $*" | sed "s#$W#/tmp/x#g; s#$B#secretsfs#"; timeout --preserve-status -s INT ${T:-20} "$@" 2>&1 | sed "s#$W#/tmp/x#g"; echo "(exit ${PIPESTATUS[0]})"; echo '```'; echo; }
mkdir -p $W/mnt
run "no region" $E $B $W/mnt
run "region but no credentials" $E AWS_REGION=eu-west-1 $B $W/mnt
touch $W/file
run "a mountpoint that is a file" $B --local $W/store --demo $W/file
run "--tll 60" $B --tll 60 --local $W/store $W/mnt
run "-o ttl=60,prefx=prod/" $B -o ttl=60,prefx=prod/ --local $W/store $W/mnt
run "--ttl 0" $B --ttl 0 --local $W/store $W/mnt
T=2 run "--ttl 5m" $B --ttl 5m --local $W/store $W/mnt
mkdir -p $W/mnt2
$B --local $W/store $W/mnt2 >/dev/null 2>&1 & D=$!
for i in $(seq 50); do grep -q " $W/mnt2 " /proc/mounts && break; sleep 0.1; done
run "a store in use" $B --local $W/store $W/mnt
kill $D; wait $D 2>/dev/null
mkdir -p $W/full; touch $W/full/x
run "a non-empty mountpoint" $B --local $W/store $W/full
kill $IMDS
rm -rf $W
