# re-plot: gnuplot mqar_accuracy_L64.gp (from this folder)
set terminal pngcairo size 900,560 font ',11'
set output 'mqar_accuracy_L64.png'
set datafile separator ','
set key autotitle columnhead outside right
set grid
set title "recall accuracy (MQAR, context 64; test split, mean and one sd over seeds)"
set xlabel "key-value pairs in the sequence"
set ylabel "accuracy at the answers (%)"
set datafile missing 'NaN'
set logscale x 2
set yrange [0:100]
plot for [i=0:3] 'mqar_accuracy_L64.csv' using 1:(column(3+3*i)):(column(4+3*i)) with filledcurves fs transparent solid 0.18 noborder lt (i+1) notitle, \
     for [i=0:3] 'mqar_accuracy_L64.csv' using 1:(column(2+3*i)) with linespoints lw 2 lt (i+1) title columnhead(2+3*i), \
     100.0/x with lines dt 2 lw 1 lc rgb 'gray40' title 'one of the P values at random'
