# re-plot: gnuplot peak_rss.gp (from this folder)
set terminal pngcairo size 900,560 font ',11'
set output 'peak_rss.png'
set datafile separator ','
set key autotitle columnhead outside right
set grid
set title "measured peak RSS of one process: prefill + decode at the context"
set xlabel "context (tokens)"
set ylabel "MiB"
set logscale x 2
plot for [i=2:5] 'peak_rss.csv' using 1:i with linespoints lw 2
