# re-plot: gnuplot state_bytes.gp (from this folder)
set terminal pngcairo size 900,560 font ',11'
set output 'state_bytes.png'
set datafile separator ','
set key autotitle columnhead outside right
set grid
set title "per-sequence state: TTT state vs KV cache"
set xlabel "context (tokens)"
set ylabel "bytes"
set logscale x 2
set logscale y 10
plot for [i=2:5] 'state_bytes.csv' using 1:i with linespoints lw 2
